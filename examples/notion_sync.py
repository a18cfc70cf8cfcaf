"""Sync the summary of every box into a Notion database, one page per box.

    pip install notion-client
    export NOTION_TOKEN=ntn_...            # an internal integration's secret
    export NOTION_DATABASE_ID=0123abcd...  # the database, shared with the integration
    python examples/notion_sync.py --results-root results
    python examples/notion_sync.py --dry-run   # print the pages, send nothing

The database needs a title property ``Name`` and a text property ``ID`` (the box id,
used to find the page again, so running the script twice updates instead of
duplicating). These are filled when the database has them: ``Project`` and
``Status`` (select), ``Created`` and ``Finished`` (date), ``Purpose`` and ``Path``
(text), ``W&B`` (URL), and a number property for each final metric, named like
the metric. Properties the database lacks are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from expbox.boxes import box_summary, list_boxes, read_tail

# The request shapes below are those of this API version; pinning it keeps the
# script working whichever notion-client release is installed.
NOTION_VERSION = "2022-06-28"
TEXT_LIMIT = 2000


def _text(value: Any) -> dict[str, Any]:
    content = "" if value is None else str(value)[:TEXT_LIMIT]
    return {"rich_text": [{"text": {"content": content}}]}


def page_properties(summary: dict[str, Any]) -> dict[str, Any]:
    """Notion property values for one box summary."""
    props: dict[str, Any] = {
        "Name": {"title": [{"text": {"content": summary["title"] or summary["id"]}}]},
        "ID": _text(summary["id"]),
        "Purpose": _text(summary["purpose"]),
        "Path": _text(summary["path"]),
        "W&B": {"url": summary["wandb_url"]},
    }
    for name, key in (("Project", "project"), ("Status", "status")):
        if summary[key]:
            # Select options may not contain commas.
            props[name] = {"select": {"name": str(summary[key]).replace(",", " ")}}
    for name, key in (("Created", "created"), ("Finished", "finished")):
        if summary[key]:
            props[name] = {"date": {"start": summary[key]}}
    for key, value in summary.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key.startswith("final.") and number and math.isfinite(value):
            props[key[len("final.") :]] = {"number": value}
    return props


def sync(client: Any, database_id: str, pages: dict[str, dict[str, Any]]) -> None:
    """Create or update one page per box id in the database."""
    schema = client.request(path=f"databases/{database_id}", method="GET")
    known = schema["properties"]
    for exp_id, props in pages.items():
        props = {k: v for k, v in props.items() if k in known}
        found = client.request(
            path=f"databases/{database_id}/query",
            method="POST",
            body={"filter": {"property": "ID", "rich_text": {"equals": exp_id}}},
        )["results"]
        if found:
            client.request(
                path=f"pages/{found[0]['id']}",
                method="PATCH",
                body={"properties": props},
            )
        else:
            client.request(
                path="pages",
                method="POST",
                body={"parent": {"database_id": database_id}, "properties": props},
            )
        print(f"{'updated' if found else 'created'} {exp_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results-root", default=os.environ.get("EXPBOX_RESULTS_ROOT", "results")
    )
    parser.add_argument("--project", help="only boxes of this project")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print one JSON line per page instead of sending",
    )
    args = parser.parse_args(argv)

    try:
        boxes = list_boxes(args.results_root, project=args.project)
    except FileNotFoundError as exc:
        print(f"notion_sync: error: {exc}", file=sys.stderr)
        return 1
    pages = {}
    for box in boxes:
        if box.meta is None:
            print(f"notion_sync: skipping {box.exp_id}: {box.problem}", file=sys.stderr)
            continue
        summary = box_summary(box, read_tail(box.paths.metrics, max_bytes=1 << 20))
        pages[box.exp_id] = page_properties(summary)

    if args.dry_run:
        for exp_id, props in pages.items():
            print(json.dumps({"id": exp_id, "properties": props}, allow_nan=False))
        return 0
    token = os.environ.get("NOTION_TOKEN")
    database_id = os.environ.get("NOTION_DATABASE_ID")
    if not token or not database_id:
        print(
            "notion_sync: error: set NOTION_TOKEN and NOTION_DATABASE_ID "
            "(or use --dry-run)",
            file=sys.stderr,
        )
        return 1
    try:
        from notion_client import Client
    except ImportError:
        print(
            "notion_sync: error: needs notion-client: pip install notion-client",
            file=sys.stderr,
        )
        return 1
    sync(Client(auth=token, notion_version=NOTION_VERSION), database_id, pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
