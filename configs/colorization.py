"""Colourisation (Zhang et al. 2016) experiment configs.

    python experiments/pretrain.py --config=configs/colorization.py:cifar10 \
        --workdir=runs/colorization_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
The default preset is cifar10, not mnist5k: colourisation needs colour, and
on mnist5k's grayscale digits the method's `init` raises a ValueError (the
mnist5k config still builds, so that tables over every method can report
the method as not applicable).
Optimizer: Adam with weight decay 1e-3 (the paper's), learning rate 2e-4
per 256 images (the paper's 3e-5 at batch 40, scaled linearly).
Published numbers: the paper's linear probes are of AlexNet features, not
of the ResNets of these presets, so no preset has a target number.
"""

from configs import common

_ADAM = {"optimizer.name": "adamw", "optimizer.learning_rate": 2e-4,
         "optimizer.weight_decay": 1e-3}

RECIPES = {
    "mnist5k": {"method.decoder_width": 32, **_ADAM},
    "cifar": {"total_epochs": 100.0, **_ADAM},
    "imagenet100": {"total_epochs": 100.0, **_ADAM},
    "imagenet2012": {"total_epochs": 100.0, **_ADAM},
}


def get_config(arg: str = "cifar10"):
  return common.get_config("colorization", arg, RECIPES)
