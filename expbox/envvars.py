"""Every environment variable expbox reads, in one place."""

from __future__ import annotations

#: Overrides the detected global rank (an integer).
RANK = "EXPBOX_RANK"
#: The experiment id shared by every rank of a job when ``exp_id`` is not passed.
EXP_ID = "EXPBOX_EXP_ID"
#: Default results root when ``results_root`` is not passed.
RESULTS_ROOT = "EXPBOX_RESULTS_ROOT"
#: Seconds between fsyncs of the metrics file (float, 0 means every batch).
FSYNC_INTERVAL = "EXPBOX_FSYNC_INTERVAL"
#: Seconds the exit hook waits for a writer before giving up on it.
EXIT_TIMEOUT = "EXPBOX_EXIT_TIMEOUT"

#: Variables whose values may be recorded in ``meta.json``. Nothing else is.
RECORDED_ENV_ALLOWLIST = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_NNODES",
    "SLURM_NTASKS",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
)
