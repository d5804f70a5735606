"""The standard linear evaluation of a pre-trained run, with kNN.

    python experiments/linear_eval.py --workdir=runs/simclr_mnist5k
    python experiments/linear_eval.py --workdir=runs/byol --step=2000 \
        --protocol.epochs=90 --protocol.optimizer.learning_rate=0.2

Restores the run's checkpoint (the latest, or `--step`) with the config it
saved in `config.json` and reports:

  linear_top1/5  the standard linear evaluation (`ssljax.evaluate.protocols`,
                 docs/evaluation.md): the method's evaluation network frozen,
                 a linear layer trained for 100 epochs on random-resized-crop
                 + flip views (SGD, momentum 0.9, base rate 0.1 × B/256 with
                 a cosine, no weight decay; MoCo v1/v2 and DINO their own
                 rates), top-1/top-5 on the centre crops of the test split.
                 Checkpointed in `<workdir>/linear/` (`linear_<p>pct` with
                 `--protocol.label_fraction`); running the command again
                 resumes it.
  knn_top1, knn1_top1, probe_top1, embedding_std, rankme
                 the monitors of pre-training (`ssljax.train.evaluation`):
                 weighted kNN (k=20, T=0.07), 1-NN, the fast probe (logistic
                 regression on frozen features of un-augmented images),
                 collapse metrics.

`--protocol.<field>` overrides a field of the protocol (the recipe's value
otherwise; fields in `ssljax.evaluate.protocols.base_protocol`). The results
are written to `<workdir>/linear_eval.json` (`linear_eval_<p>pct.json` with
a label fraction) and the last line printed sums them up.

On many hosts, start the same command on every host (see `pretrain.py`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import _cli
from ssljax.evaluate import protocols
from ssljax.train import evaluation, metrics as metrics_lib, restore_state

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a pretrain run.",
                               required=True)
_STEP = flags.DEFINE_integer(
    "step", None, "Checkpoint step to evaluate; default the latest; 0 is the "
    "run's initialisation (the from-scratch baseline).")
_MONITORS = flags.DEFINE_bool(
    "monitors", True, "Also report kNN, the fast probe and collapse metrics.")
_PROTOCOL = config_flags.DEFINE_config_dict(
    "protocol", protocols.base_protocol("linear"),
    "Overrides of the linear evaluation's fields, --protocol.<field>=<value>.")


def result_file(protocol, named_step: bool = False) -> str:
  """`linear_eval.json`, or `linear_eval_<p>pct.json` with a fraction of the
  labels, `..._step<N>.json` for a chosen checkpoint."""
  return protocols.directory(protocol, named_step).replace(
      "linear", "linear_eval", 1) + ".json"


def run(workdir: str, step=None, overrides=None, monitors: bool = True
        ) -> tuple[object, dict[str, float]]:
  """(config, metrics) of the checkpoint of `workdir` at `step` (latest)."""
  config = _cli.read_config(workdir)
  state = restore_state(config, workdir, step=step,
                        image_shape=evaluation.dataset_info(config).image_shape)
  result = {"step": int(jax.device_get(state.step))}
  if monitors:
    result.update(evaluation.evaluate_state(config, state))
  named_step = step is not None
  protocol, linear = protocols.run("linear", config, state, workdir,
                                   overrides=overrides, named_step=named_step)
  if len(linear) == 1:  # Stopped by SIGTERM: no score yet.
    return config, None
  result.update({k: v for k, v in linear.items() if k != "step"})
  if jax.process_index() == 0:
    metrics_lib.write_summary(workdir, result,
                              filename=result_file(protocol, named_step))
  return config, result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _cli.start()
  config, result = run(_WORKDIR.value, _STEP.value,
                       config_flags.get_override_values(
                           flags.FLAGS[_PROTOCOL.name]),
                       _MONITORS.value)
  if result is not None and jax.process_index() == 0:
    print(metrics_lib.summary_line(config, result), flush=True)


if __name__ == "__main__":
  app.run(main)
