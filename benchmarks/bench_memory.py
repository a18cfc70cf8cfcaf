"""Peak memory while logging ten million records as fast as Python can call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = """
import resource, sys, time
from pathlib import Path
from expbox.loggers import FileLogger
from expbox.paths import ExpPaths
from expbox.writer import DEFAULT_MAX_PENDING

paths = ExpPaths(Path(sys.argv[1]))
paths.root.mkdir(exist_ok=True)
logger = FileLogger(paths, exp_id="rss")
metrics = {"loss": 0.25, "acc": 0.875, "lr": 0.001, "grad_norm": 1.5}
logger.log_metrics(metrics, step=0)
logger.flush()


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])


# Reset the kernel's peak (VmHWM) so imports do not hide the logging peak.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
begin = time.perf_counter()
log_metrics = logger.log_metrics
for step in range(1, int(sys.argv[2])):
    log_metrics(metrics, step=step)
logger.close()
seconds = time.perf_counter() - begin
after = status("VmHWM:")
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, seconds, DEFAULT_MAX_PENDING, maxrss)
"""


def test_peak_rss_for_ten_million_records(benchmark, tmp_path, report):
    """Peak RSS of a child logging 10M records, minus its footprint before."""
    n = 10_000_000
    result: list[str] = []

    def run():
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path), str(n)],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        result.append(out.stdout)

    benchmark.pedantic(run, rounds=1, iterations=1)

    before_kib, after_kib, seconds, max_pending, maxrss_kib = result[0].split()
    growth_mib = (int(after_kib) - int(before_kib)) / 1024
    # The documented bound: max_pending records of about 0.5 KiB each.
    bound_mib = int(max_pending) * 0.5 / 1024
    lines = (tmp_path / "logs" / "metrics.jsonl").read_bytes().count(b"\n")
    assert lines == n
    report(
        "5. peak RSS growth, 10M records / bound",
        growth_mib / bound_mib,
        1.0,
        1.0,
        f"grew {growth_mib:.1f} MiB (from {int(before_kib) / 1024:.1f} to "
        f"{int(after_kib) / 1024:.1f} MiB) against a documented bound of "
        f"{bound_mib:.0f} MiB (VmHWM after a reset; ru_maxrss "
        f"{int(maxrss_kib) / 1024:.1f} MiB); {n / float(seconds) / 1e6:.2f} M "
        f"records/s",
    )
