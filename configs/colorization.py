"""Colourisation (Zhang et al. 2016) experiment configs.

    python experiments/pretrain.py --config=configs/colorization.py:cifar10 \
        --workdir=runs/colorization_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
The default preset is cifar10, not mnist5k: colourisation needs colour, and
on mnist5k's grayscale digits the method's `init` raises a ValueError (the
mnist5k config still builds, so that tables over every method can report
the method as not applicable).
Optimizer: the official Adam (richzhang/colorization `train/solver.prototxt`):
rate 3e-5 at batch 40 (1.9e-4 per 256 images), β1 = 0.9, weight decay 1e-3
on every parameter, no warm-up; ImageNet: 500k iterations (16 epochs). Its
β2 = 0.99, its L2 (not decoupled) weight decay and its step schedule
(×0.1 at 225k) differ here (docs/fidelity.md#colorization).
Published numbers: the paper's linear probes are of AlexNet features, not
of the ResNets of these presets, so no preset has a target number.
"""

from configs import common

_ADAM = {"optimizer.name": "adamw", "optimizer.learning_rate": 3e-5 * 256 / 40,
         "optimizer.weight_decay": 1e-3,
         "optimizer.exclude_bias_and_norm": False,
         "optimizer.warmup_steps": 0}

RECIPES = {
    "mnist5k": {"method.decoder_width": 32, **_ADAM},
    "cifar": {"total_epochs": 100.0, **_ADAM},
    "imagenet100": {"total_epochs": 100.0, **_ADAM},
    "imagenet2012": {"total_epochs": 16.0, **_ADAM},
}


def get_config(arg: str = "cifar10"):
  return common.get_config("colorization", arg, RECIPES)
