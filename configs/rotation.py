"""RotNet (Gidaris et al. 2018) experiment configs.

    python experiments/pretrain.py --config=configs/rotation.py:cifar10 \
        --workdir=runs/rotation_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: the paper's SGD (momentum 0.9, weight decay 5e-4, learning rate
0.1 for a batch of 128, i.e. 0.2 per 256 images).
Published numbers: the paper evaluates Network-in-Network (CIFAR-10) and
AlexNet (ImageNet) features, none of the ResNet linear probes of these
presets, so no preset has a target number; mnist5k is a smoke run of a few
minutes on a CPU.
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.2,
        "optimizer.weight_decay": 5e-4}

RECIPES = {
    "mnist5k": {"method.head_hidden_dim": 128, **_SGD},
    "cifar": {"total_epochs": 100.0, **_SGD},
    "imagenet100": {"total_epochs": 100.0, **_SGD},
    "imagenet2012": {"total_epochs": 30.0, **_SGD},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("rotation", arg, RECIPES)
