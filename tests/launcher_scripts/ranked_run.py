"""One rank of a launched job: init a box, log every step, save, report.

Run by torchrun, mpirun and srun from tests/test_launchers.py. Each rank writes what
it saw to ``<report-dir>/rank-<n>.json`` (outside the results root, so the test can
count boxes) and asserts on the spot that a rank other than 0 started no thread.

Usage: ranked_run.py RESULTS_ROOT REPORT_DIR [--steps N] [--gloo]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import threading
from pathlib import Path

import expbox as xb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results_root")
    parser.add_argument("report_dir")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gloo", action="store_true")
    args = parser.parse_args()

    dist = None
    if args.gloo:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))

    threads_before = sorted(t.name for t in threading.enumerate())
    ctx = xb.init(project="launch", results_root=args.results_root, logger="file")
    threads_after_init = sorted(t.name for t in threading.enumerate())
    rank = ctx.rank
    for step in range(args.steps):
        ctx.logger.log_metrics({"from_rank": rank, "value": step * 0.5}, step=step)
    threads_after_logging = sorted(t.name for t in threading.enumerate())

    if not ctx.is_main:
        assert threads_after_init == threads_before, threads_after_init
        assert threads_after_logging == threads_before, threads_after_logging

    # Rank 1 reads the shared id before the barrier; no expbox call is collective,
    # so the barrier is the only meeting point and it must not hang.
    seen_exp_id = ctx.exp_id
    if dist is not None:
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    xb.save(ctx)

    report = {
        "rank": rank,
        "is_main": ctx.is_main,
        "exp_id": seen_exp_id,
        "pid": os.getpid(),
        "threads_before": threads_before,
        "threads_after_init": threads_after_init,
        "threads_after_logging": threads_after_logging,
        "has_paths": ctx.paths is not None,
    }
    name = f"rank-{rank if rank is not None else 'none'}-{os.getpid()}.json"
    Path(args.report_dir, name).write_text(json.dumps(report))
    if dist is not None:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
