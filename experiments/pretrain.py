"""Pre-trains a self-supervised method: the main command line of ssljax.

    python experiments/pretrain.py       # SimCLR on MNIST-5k, minutes on a CPU
    python experiments/pretrain.py --config=configs/byol.py:cifar10 \
        --workdir=runs/byol --config.total_steps=2000 --config.batch_size=512

Running the same command again with the same `--workdir` resumes from its
latest checkpoint (a workdir of another run is refused). SIGTERM saves a
checkpoint at the end of the current step and exits with status 0.

Many hosts: start the same command on every host. On Cloud TPU, under Slurm
(`srun`) and Open MPI (`mpirun`) the processes find each other by
themselves; elsewhere give each one

    --coordinator_address=HOST0:PORT --num_processes=N --process_id=I

Each process loads its slice of every global batch; all of them write the
checkpoint together into the one (shared) `--workdir`, and process 0 writes
the logs. The last line printed is a summary of the final metrics.
"""

import logging as python_logging
import os
import sys

# configs/ is imported as a package by the config files.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ssljax import train
from ssljax.train import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "simclr.py") + ":mnist5k",
    "Experiment config, `path/to/config.py:preset[,key=value...]`.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Run directory (checkpoints, logs); default runs/<method>_<dataset>.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0, for multi-process runs outside TPU/Slurm/MPI.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (with --coordinator_address).")

# Printed first in the summary line when an evaluation hook logged them.
_HEADLINE = ("knn_top1", "linear_top1", "loss")


def summary(config, metrics) -> str:
  """One line: the run and its final metrics, evaluation results first.

  Example:
    >>> import ml_collections
    >>> config = ml_collections.ConfigDict(dict(
    ...     method=dict(name="simclr"), dataset=dict(name="mnist5k")))
    >>> print(summary(config, {"step": 10, "loss": 1.23456, "lr": 0.1}))
    simclr on mnist5k, step 10: loss=1.235 lr=0.1
  """
  keys = [k for k in _HEADLINE if k in metrics]
  keys += sorted(k for k in metrics if k not in keys and k != "step")
  values = " ".join(f"{k}={metrics[k]:.4g}" for k in keys)
  return (f"{config.method.name} on {config.dataset.name}, "
          f"step {metrics['step']}: {values or 'already trained'}")


def _quiet_orbax(record) -> bool:
  """Drops orbax's per-save INFO records from the log; keeps warnings."""
  return (record.levelno >= python_logging.WARNING
          or "orbax" not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_quiet_orbax)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
      "runs", f"{config.method.name}_{config.dataset.name}")
  logging.info("process %d of %d, %d devices, workdir %s",
               jax.process_index(), jax.process_count(), jax.device_count(),
               workdir)
  metrics = train.train(config, workdir)
  if jax.process_index() == 0:
    print(summary(config, metrics), flush=True)


if __name__ == "__main__":
  app.run(main)
