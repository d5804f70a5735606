"""Jigsaw puzzles (Noroozi & Favaro 2016) experiment configs.

    python experiments/pretrain.py --config=configs/jigsaw.py:cifar10 \
        --workdir=runs/jigsaw_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: the paper's SGD, learning rate 0.01 at batch 256 (ImageNet:
350k iterations, about 70 epochs; 0.1 on mnist5k's short runs); 1000
permutations, 100 on mnist5k's 28-pixel digits (7-pixel tiles).
Published numbers: the paper evaluates AlexNet features by fine-tuning and
per-layer probes, none of the ResNet linear probes of these presets, so no
preset has a target number; mnist5k is a smoke run of a few minutes on a CPU.
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.01,
        "optimizer.weight_decay": 5e-4}

RECIPES = {
    "mnist5k": {"method.head_hidden_dim": 128, "method.num_permutations": 100,
                **_SGD, "optimizer.learning_rate": 0.1},
    "cifar": {"total_epochs": 100.0, **_SGD},
    "imagenet100": {"total_epochs": 100.0, **_SGD},
    "imagenet2012": {"total_epochs": 70.0, **_SGD},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("jigsaw", arg, RECIPES)
