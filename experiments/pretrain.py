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
the logs.

The frozen encoder is evaluated (`ssljax.train.evaluation`: weighted kNN,
1-NN, embedding std, RankMe) every `config.eval_every` steps (default: at
every checkpoint) and at the end, with the fast linear probe at the end
(`probe_top1`; the standard linear evaluation is `linear_eval.py`). The
workdir then also holds `summary.json` (the final metrics) and `curves.png`
(loss and accuracies). The last line printed is a summary of the final
metrics, `knn_top1` and `probe_top1` first; running a finished workdir's
command again prints it again.
"""

import os
import sys

# configs/ is imported as a package by the config files.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import _cli
from ssljax.train import metrics as metrics_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_cli.ROOT, "configs", "simclr.py") + ":mnist5k",
    "Experiment config, `path/to/config.py:preset[,key=value...]`.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Run directory (checkpoints, logs); default runs/<method>_<dataset>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _cli.start()
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join(
      "runs", f"{config.method.name}_{config.dataset.name}")
  final = _cli.pretrain(config, workdir)
  if jax.process_index() == 0:
    print(metrics_lib.summary_line(config, final), flush=True)


if __name__ == "__main__":
  app.run(main)
