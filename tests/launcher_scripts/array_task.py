"""One task of an array job: its own box, named after the array task id.

Before logging, every task waits (up to a limit) until all ``--tasks`` tasks have
checked in under ``CHECKIN_DIR``, which proves they run at the same time.

Usage: array_task.py RESULTS_ROOT CHECKIN_DIR [--tasks N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import expbox as xb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results_root")
    parser.add_argument("checkin_dir")
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()

    task = os.environ["SLURM_ARRAY_TASK_ID"]
    checkin = Path(args.checkin_dir)
    (checkin / f"task-{task}").touch()
    deadline = time.monotonic() + 60
    while len(list(checkin.iterdir())) < args.tasks:
        if time.monotonic() > deadline:
            raise SystemExit(f"task {task}: the other array tasks never started")
        time.sleep(0.05)

    # The documented recipe: one box per array task, named after the task id. All
    # tasks start in the same minute, so the datetime ids alone would collide and be
    # moved on to free names; the suffix makes each name say which task it is.
    ctx = xb.init(
        project="sweep",
        results_root=args.results_root,
        logger="file",
        prefix="sweep",
        suffix=f"task{task}",
        config={"task": int(task)},
    )
    for step in range(100):
        ctx.logger.log_metrics({"task": int(task), "value": step}, step=step)
    xb.save(ctx)


if __name__ == "__main__":
    main()
