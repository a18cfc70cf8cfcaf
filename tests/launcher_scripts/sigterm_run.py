"""A long job that SLURM ends with SIGTERM: log, signal readiness, keep logging.

Logs ``--burst`` records, flushes, writes ``READY_FILE`` with the number logged, then
logs one record every few milliseconds until a signal ends the process.

Usage: sigterm_run.py RESULTS_ROOT READY_FILE [--burst N]
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
    parser.add_argument("ready_file")
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()

    ctx = xb.init(project="longjob", results_root=args.results_root, logger="file")
    for step in range(args.burst):
        ctx.logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    ctx.logger.flush()

    ready = Path(args.ready_file)
    ready.with_suffix(".tmp").write_text(f"{ctx.exp_id} {args.burst} {os.getpid()}")
    ready.with_suffix(".tmp").rename(ready)

    step = args.burst
    deadline = time.monotonic() + 120  # never outlive a broken test for long
    while time.monotonic() < deadline:
        ctx.logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        step += 1
        time.sleep(0.002)
    raise SystemExit("no signal arrived within 120 seconds")


if __name__ == "__main__":
    main()
