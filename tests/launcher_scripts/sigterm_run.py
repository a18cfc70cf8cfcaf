"""A long job that SLURM ends with SIGTERM: log, signal readiness, keep logging.

Logs ``--burst`` records, flushes, writes ``READY_FILE`` with the number logged, then
logs one record every few milliseconds until a signal ends the process.

A SIGTERM handler of its own, installed before ``xb.init`` as a framework would,
writes ``<READY_FILE>.last`` with the last step whose ``log_metrics`` call returned,
then lets the signal kill the process; expbox runs first and chains to it.

Usage: sigterm_run.py RESULTS_ROOT READY_FILE [--burst N]
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import expbox as xb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results_root")
    parser.add_argument("ready_file")
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    ready = Path(args.ready_file)
    last_logged = -1

    def note_last_step(signum: int, frame: object) -> None:
        ready.with_suffix(".last").write_text(str(last_logged))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, note_last_step)
    ctx = xb.init(project="longjob", results_root=args.results_root, logger="file")
    for step in range(args.burst):
        ctx.logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    ctx.logger.flush()
    ready.with_suffix(".tmp").write_text(f"{ctx.exp_id} {args.burst} {os.getpid()}")
    ready.with_suffix(".tmp").rename(ready)

    step = args.burst
    deadline = time.monotonic() + 120  # never outlive a broken test for long
    while time.monotonic() < deadline:
        ctx.logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        last_logged = step
        step += 1
        time.sleep(0.002)
    raise SystemExit("no signal arrived within 120 seconds")


if __name__ == "__main__":
    main()
