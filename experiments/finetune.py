"""Fine-tunes a pre-trained run's encoder end to end with a fresh head.

    python experiments/finetune.py --workdir=runs/simclr_mnist5k
    python experiments/finetune.py --workdir=runs/byol --label_fraction=0.01
    python experiments/finetune.py --workdir=runs/mae --step=0  # from scratch
    python experiments/finetune.py --workdir=runs/mae --protocol.epochs=50 \
        --protocol.optimizer.layer_decay=0.75

Restores the run's checkpoint (the latest, or `--step`; `--step=0` is the
run's network at its initialisation, the from-scratch baseline that says
what pre-training adds) with the config it saved in `config.json`, takes
the backbone its method evaluates (the online one, DINO's teacher) and
trains it with a linear head on random-resized-crop + flip views by MAE's
recipe (`ssljax.evaluate.protocols.finetune_protocol`,
docs/evaluation.md): AdamW, base rate 5e-4 × B/256, 5 warm-up epochs and a
cosine, weight decay 0.05, label smoothing 0.1, 100 epochs, and for ViTs
layer-wise rate decay 0.65 and drop path 0.1. `--label_fraction` 0.01 or 0.1
trains on a fixed class-balanced subset of the training labels, the same for
every method (the semi-supervised protocol of SimCLR and BYOL).

Checkpointed in `<workdir>/finetune/` (`finetune_<p>pct` with a fraction,
`finetune_step<N>` with `--step`); running the command again resumes
exactly. The result, `finetune_top1` and `finetune_top5` on the centre crops
of the test split, is written to `<workdir>/finetune.json` (and likewise
`finetune_<p>pct.json`, `finetune_step<N>.json`) and summed up on the last
line printed. `--protocol.<field>` overrides any field of the protocol.

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
from ssljax.train import metrics as metrics_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a pretrain run.",
                               required=True)
_STEP = flags.DEFINE_integer(
    "step", None, "Checkpoint step to fine-tune; default the latest; 0 is the "
    "run's initialisation (the from-scratch baseline).")
_LABEL_FRACTION = flags.DEFINE_float(
    "label_fraction", 1.0, "Fraction of the training labels (0.01, 0.1: the "
    "semi-supervised protocol).")
_PROTOCOL = config_flags.DEFINE_config_dict(
    "protocol", protocols.base_protocol("finetune"),
    "Overrides of the fine-tuning's fields, --protocol.<field>=<value>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _cli.start()
  overrides = {"label_fraction": _LABEL_FRACTION.value,
               **config_flags.get_override_values(flags.FLAGS[_PROTOCOL.name])}
  config, result = _cli.finetune(_WORKDIR.value, _STEP.value, overrides)
  if result is not None and jax.process_index() == 0:
    print(metrics_lib.summary_line(config, result), flush=True)


if __name__ == "__main__":
  app.run(main)
