"""Evaluates a pre-trained run's frozen encoder: linear probe and kNN.

    python experiments/linear_eval.py --workdir=runs/simclr_mnist5k
    python experiments/linear_eval.py --workdir=runs/byol --step=2000

Restores the run's checkpoint (the latest, or `--step`) with the config it
saved in `config.json`, encodes the train and test splits of its dataset
without augmentation, and reports `ssljax.train.evaluation`'s metrics:
linear probe top-1 (`linear_top1`), weighted kNN (k=20, T=0.07) and 1-NN
top-1, embedding std and RankMe. They are written to
`<workdir>/linear_eval.json` and the last line printed sums them up.

On many hosts, start the same command on every host (see `pretrain.py`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from absl import app, flags

from experiments import _cli
from ssljax import data
from ssljax.train import evaluation, metrics as metrics_lib, restore_state

RESULT_FILE = "linear_eval.json"

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a pretrain run.",
                               required=True)
_STEP = flags.DEFINE_integer("step", None,
                             "Checkpoint step to evaluate; default the latest.")


def run(workdir: str, step=None) -> tuple[object, dict[str, float]]:
  """(config, metrics) of the checkpoint of `workdir` at `step` (latest)."""
  config = _cli.read_config(workdir)
  state = restore_state(config, workdir, step=step,
                        image_shape=data.info(config.dataset.name).image_shape)
  result = {"step": int(jax.device_get(state.step)),
            **evaluation.evaluate_state(config, state)}
  if jax.process_index() == 0:
    metrics_lib.write_summary(workdir, result, filename=RESULT_FILE)
  return config, result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _cli.start()
  config, result = run(_WORKDIR.value, _STEP.value)
  if jax.process_index() == 0:
    print(metrics_lib.summary_line(config, result), flush=True)


if __name__ == "__main__":
  app.run(main)
