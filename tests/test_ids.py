"""Tests for experiment ids and the atomic claim of box directories."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from expbox import ids
from expbox.errors import BoxExistsError
from expbox.ids import claim_box, slugify_project
from expbox.names import check_name

NOW = datetime(2025, 1, 24, 15, 30, 12)
BAD_NAMES = ["a/b", "a\\b", "..", "a\x00b", "", ".hidden", " padded"]


def test_datetime_style_is_yymmdd_hhmm(tmp_path: Path) -> None:
    """The default style names the box YYMMDD-HHMM from the given time."""
    exp_id, box = claim_box(tmp_path, project="DrugScreen", now=NOW)

    assert exp_id == "250124-1530"
    assert box == tmp_path / "250124-1530"
    assert box.is_dir()


def test_datetime_style_uses_an_aware_time_as_given(tmp_path: Path) -> None:
    """An aware time is formatted in its own zone, not converted."""
    now = datetime(2025, 1, 24, 23, 59, tzinfo=timezone(timedelta(hours=9)))

    exp_id, _ = claim_box(tmp_path, project="p", now=now)

    assert exp_id == "250124-2359"


def test_datetime_style_defaults_to_local_time_now(tmp_path: Path) -> None:
    """Without ``now`` the id is the local time of the call, to the minute."""
    before = datetime.now().replace(second=0, microsecond=0)

    exp_id, _ = claim_box(tmp_path, project="p")

    after = datetime.now()
    assert re.fullmatch(r"\d{6}-\d{4}", exp_id)
    assert before <= datetime.strptime(exp_id, "%y%m%d-%H%M") <= after


def test_taken_datetime_ids_move_on_with_a_counter(tmp_path: Path) -> None:
    """Boxes claimed in the same minute get -2, -3 after the first."""
    got = [claim_box(tmp_path, project="p", now=NOW)[0] for _ in range(4)]

    assert got == ["250124-1530", "250124-1530-2", "250124-1530-3", "250124-1530-4"]


def test_datetime_counter_continues_past_the_highest_taken(tmp_path: Path) -> None:
    """A crowded minute continues after the highest counter on disk."""
    (tmp_path / "250124-1530").mkdir()
    (tmp_path / "250124-1530-7").mkdir()

    exp_id, _ = claim_box(tmp_path, project="p", now=NOW)

    assert exp_id == "250124-1530-8"


@pytest.mark.parametrize(
    ("link_style", "expected"),
    [("kebab", "rbc-250124-1530-v1"), ("snake", "rbc_250124-1530_v1")],
)
def test_prefix_and_suffix_join_by_link_style(
    tmp_path: Path, link_style: str, expected: str
) -> None:
    """Prefix and suffix join with - for kebab and _ for snake."""
    exp_id, box = claim_box(
        tmp_path, project="p", prefix="rbc", suffix="v1", link_style=link_style, now=NOW
    )

    assert exp_id == expected
    assert box.name == expected


def test_prefix_alone_and_suffix_alone(tmp_path: Path) -> None:
    """A prefix or a suffix can be given without the other."""
    assert claim_box(tmp_path, project="p", prefix="a", now=NOW)[0] == "a-250124-1530"
    assert claim_box(tmp_path, project="p", suffix="z", now=NOW)[0] == "250124-1530-z"


def test_counter_sits_before_the_suffix(tmp_path: Path) -> None:
    """A taken id keeps its suffix last: rbc_250124-1530-2_v1."""
    kwargs = dict(project="p", prefix="rbc", suffix="v1", link_style="snake", now=NOW)

    first = claim_box(tmp_path, **kwargs)[0]
    second = claim_box(tmp_path, **kwargs)[0]

    assert (first, second) == ("rbc_250124-1530_v1", "rbc_250124-1530-2_v1")


def test_seq_style_counts_from_01_per_project(tmp_path: Path) -> None:
    """The seq style gives myproj-01, myproj-02 from a lowercased project name."""
    got = [claim_box(tmp_path, project="MyProj", id_style="seq")[0] for _ in range(3)]
    other = claim_box(tmp_path, project="Other", id_style="seq")[0]

    assert got == ["myproj-01", "myproj-02", "myproj-03"]
    assert other == "other-01"


def test_seq_style_grows_past_99(tmp_path: Path) -> None:
    """After myproj-99 comes myproj-100."""
    (tmp_path / "myproj-99").mkdir()

    exp_id, _ = claim_box(tmp_path, project="myproj", id_style="seq")

    assert exp_id == "myproj-100"


def test_seq_style_counts_separately_per_prefix_and_suffix(tmp_path: Path) -> None:
    """Numbers are counted among ids with the same prefix and suffix."""
    claim_box(tmp_path, project="p", id_style="seq")
    claim_box(tmp_path, project="p", id_style="seq")

    exp_id, _ = claim_box(
        tmp_path, project="p", id_style="seq", prefix="rbc", link_style="snake"
    )

    assert exp_id == "rbc_p-01"


@pytest.mark.parametrize(
    ("project", "slug"),
    [
        ("MyProj", "myproj"),
        ("Drug Screen/v2", "drug-screen-v2"),
        ("  a..b  ", "a..b"),
        ("..hidden", "hidden"),
        ("ÄrzteStudie", "ärztestudie"),
        ("x_y-z", "x_y-z"),
    ],
)
def test_slugify_project_is_lowercase_and_path_safe(project: str, slug: str) -> None:
    """Project names become lowercase path-safe slugs."""
    assert slugify_project(project) == slug


def test_slugify_project_refuses_a_name_without_letters() -> None:
    """A project name with nothing usable raises ValueError naming it."""
    with pytest.raises(ValueError, match="'!!'"):
        slugify_project("!!")


def test_random_style_is_eight_lowercase_characters(tmp_path: Path) -> None:
    """The random style gives 8 lowercase letters and digits, different each time."""
    got = {claim_box(tmp_path, project="p", id_style="random")[0] for _ in range(20)}

    assert len(got) == 20
    assert all(re.fullmatch(r"[a-z0-9]{8}", exp_id) for exp_id in got)


def test_random_style_gives_up_after_bounded_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When every random name is taken, the claim fails clearly instead of looping."""
    monkeypatch.setattr(ids, "RANDOM_ALPHABET", "a")
    monkeypatch.setattr(ids, "RANDOM_LENGTH", 1)
    claim_box(tmp_path, project="p", id_style="random")

    with pytest.raises(BoxExistsError, match="100 draws"):
        claim_box(tmp_path, project="p", id_style="random")


def test_custom_generator_names_the_box(tmp_path: Path) -> None:
    """id_generator(project, root) names the box, with prefix and suffix around it."""
    calls = []

    def generator(project: str, root: Path) -> str:
        calls.append((project, root))
        return "mouseA_kidney_01"

    first = claim_box(tmp_path, project="Mice", id_generator=generator)[0]
    second = claim_box(
        tmp_path,
        project="Mice",
        id_generator=generator,
        suffix="v2",
        link_style="snake",
    )[0]

    assert first == "mouseA_kidney_01"
    assert second == "mouseA_kidney_01_v2"
    assert calls == [("Mice", tmp_path), ("Mice", tmp_path)]


def test_taken_custom_id_moves_on_with_a_counter(tmp_path: Path) -> None:
    """A generator that repeats itself gets -2 rather than sharing a box."""
    got = [
        claim_box(tmp_path, project="p", id_generator=lambda p, r: "same")[0]
        for _ in range(3)
    ]

    assert got == ["same", "same-2", "same-3"]


def test_custom_style_needs_a_generator(tmp_path: Path) -> None:
    """id_style='custom' without id_generator is a ValueError."""
    with pytest.raises(ValueError, match="id_generator"):
        claim_box(tmp_path, project="p", id_style="custom")


@pytest.mark.parametrize(
    ("kwargs", "choices"),
    [
        ({"id_style": "uuid"}, "'datetime', 'seq', 'random', 'custom'"),
        ({"link_style": "camel"}, "'kebab', 'snake'"),
    ],
)
def test_unknown_style_lists_the_valid_choices(
    tmp_path: Path, kwargs: dict, choices: str
) -> None:
    """An unknown id_style or link_style raises ValueError listing the choices."""
    with pytest.raises(ValueError, match=re.escape(choices)):
        claim_box(tmp_path / "root", project="p", **kwargs)

    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("what", ["exp_id", "prefix", "suffix"])
def test_unsafe_names_are_refused_before_any_directory(
    tmp_path: Path, what: str, bad: str
) -> None:
    """An unsafe exp_id, prefix or suffix raises ValueError and creates nothing."""
    root = tmp_path / "results"

    with pytest.raises(ValueError, match=what):
        claim_box(root, project="p", **{what: bad})

    assert not root.exists()


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_generated_ids_are_refused(tmp_path: Path, bad: str) -> None:
    """An unsafe id from id_generator raises ValueError and claims no box."""
    root = tmp_path / "results"

    with pytest.raises(ValueError, match="id_generator"):
        claim_box(root, project="p", id_generator=lambda p, r: bad)

    assert list(root.iterdir()) == []


def test_generator_can_look_at_a_new_results_root(tmp_path: Path) -> None:
    """The generator is called once the results root exists, even the first time."""

    def numbered(project: str, root: Path) -> str:
        return f"{project}_{len(list(root.iterdir())) + 1:02d}"

    root = tmp_path / "new" / "results"
    got = [
        claim_box(root, project="mouseA", id_generator=numbered)[0] for _ in range(2)
    ]

    assert got == ["mouseA_01", "mouseA_02"]


def test_explicit_exp_id_is_used_as_given(tmp_path: Path) -> None:
    """An explicit exp_id names the box and creates the results root with parents."""
    root = tmp_path / "deep" / "results"

    exp_id, box = claim_box(root, project="p", exp_id="run_A")

    assert exp_id == "run_A"
    assert box == root / "run_A"
    assert box.is_dir()


def test_existing_explicit_exp_id_raises_naming_the_box(tmp_path: Path) -> None:
    """An explicit exp_id that exists raises BoxExistsError naming its path."""
    claim_box(tmp_path, project="p", exp_id="run_A")

    with pytest.raises(BoxExistsError, match=re.escape(str(tmp_path / "run_A"))):
        claim_box(tmp_path, project="p", exp_id="run_A")


@pytest.mark.parametrize("style", ["datetime", "random", "seq"])
@pytest.mark.parametrize("length", [100, 150])
def test_prefix_and_suffix_too_long_together_are_refused_before_any_directory(
    tmp_path: Path, style: str, length: int
) -> None:
    """A prefix and suffix whose joined id is no valid box name raise ValueError."""
    root = tmp_path / "results"

    with pytest.raises(ValueError, match="shorten prefix,? (or )?suffix"):
        claim_box(
            root, project="p", id_style=style, prefix="a" * length, suffix="b" * length
        )

    assert not root.exists()


def test_prefix_and_suffix_too_long_for_a_generated_id_are_refused(
    tmp_path: Path,
) -> None:
    """With an id_generator, a too long prefix and suffix fail before any mkdir."""
    root = tmp_path / "results"

    with pytest.raises(ValueError, match="shorten prefix or suffix"):
        claim_box(
            root, project="p", prefix="a" * 100, suffix="b" * 100, id_generator=str
        )

    assert not root.exists()


def test_a_generated_id_leaves_room_for_its_counter(tmp_path: Path) -> None:
    """An id_generator result that fits alone but not with a counter is refused."""
    with pytest.raises(ValueError, match="id_generator result"):
        claim_box(tmp_path, project="p", id_generator=lambda p, r: "g" * 200)

    assert list(tmp_path.iterdir()) == []


def test_the_longest_accepted_prefix_makes_valid_counted_ids(tmp_path: Path) -> None:
    """The longest prefix accepted still names valid boxes once they are counted."""
    # 200 bytes in all: prefix, "-", an 11-byte datetime core and "-9999".
    prefix = "é" * 91 + "a"

    got = [
        claim_box(tmp_path, project="p", prefix=prefix, now=NOW)[0] for _ in range(3)
    ]

    assert [check_name(exp_id, "exp_id") for exp_id in got] == got
    assert got[1:] == [f"{got[0]}-2", f"{got[0]}-3"]
    with pytest.raises(ValueError, match="shorten prefix"):
        claim_box(tmp_path, project="p", prefix=prefix + "a", now=NOW)


def test_a_random_id_needs_no_room_for_a_counter(tmp_path: Path) -> None:
    """A random id is never counted, so its suffix may fill the name to 200 bytes."""
    suffix = "s" * (200 - 1 - ids.RANDOM_LENGTH)

    exp_id, box = claim_box(tmp_path, project="p", id_style="random", suffix=suffix)

    assert len(exp_id) == 200 and box.is_dir()
    with pytest.raises(ValueError, match="shorten suffix"):
        claim_box(tmp_path, project="p", id_style="random", suffix=suffix + "s")


def test_explicit_exp_id_with_prefix_is_refused(tmp_path: Path) -> None:
    """exp_id is complete: combining it with a prefix raises ValueError."""
    with pytest.raises(ValueError, match="complete id"):
        claim_box(tmp_path, project="p", exp_id="run_A", prefix="rbc")


_CLAIM_CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime
    from pathlib import Path
    from expbox.ids import claim_box

    root, start, style = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    Path(sys.argv[4]).touch()
    deadline = time.monotonic() + 60
    while not start.exists():
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.001)
    exp_id, _ = claim_box(
        root, project="Proj", id_style=style, now=datetime(2025, 1, 24, 15, 30)
    )
    print(exp_id)
    """
)


def _claim_together(tmp_path: Path, style: str, count: int = 16) -> list[str]:
    root = tmp_path / "results"
    start = tmp_path / "start"
    ready = [tmp_path / f"ready-{n}" for n in range(count)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM_CHILD, str(root), str(start), style, str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    # Release them only once every child has imported expbox and is waiting,
    # so that the claims really race.
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    start.touch()
    outputs = [child.communicate(timeout=120) for child in children]

    assert [child.returncode for child in children] == [0] * count, outputs
    return [out.strip() for out, _ in outputs]


def test_sixteen_processes_get_sixteen_datetime_boxes(tmp_path: Path) -> None:
    """Sixteen processes claiming the same minute together get 16 distinct boxes."""
    got = _claim_together(tmp_path, "datetime")

    expected = {"250124-1530"} | {f"250124-1530-{n}" for n in range(2, 17)}
    assert set(got) == expected
    assert {p.name for p in (tmp_path / "results").iterdir()} == expected


def test_sixteen_processes_get_consecutive_seq_numbers(tmp_path: Path) -> None:
    """Sixteen processes claiming seq ids together get proj-01 to proj-16."""
    got = _claim_together(tmp_path, "seq")

    expected = {f"proj-{n:02d}" for n in range(1, 17)}
    assert set(got) == expected
    assert {p.name for p in (tmp_path / "results").iterdir()} == expected
