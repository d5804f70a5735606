"""RotNet (Gidaris et al. 2018) experiment configs.

    python experiments/pretrain.py --config=configs/rotation.py:cifar10 \
        --workdir=runs/rotation_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: the official SGD (gidariss/FeatureLearningRotNet `config/`):
momentum 0.9, weight decay 5e-4 on every parameter, no warm-up; CIFAR-10:
rate 0.1 at batch 128 (0.2 per 256 images) for 200 epochs; ImageNet: 0.01
at batch 192 (its look-up table's first rate, 0.0133 per 256) for 50
epochs. The official step schedule and Nesterov momentum are replaced by
the library's cosine decay and heavy-ball momentum (docs/fidelity.md#rotation).
mnist5k is ours: an MLP head of 128 units (2 layers) instead of the
official linear one, biases and norms not decayed, 2 warm-up epochs.
Published numbers: the paper evaluates Network-in-Network (CIFAR-10) and
AlexNet (ImageNet) features, none of the ResNet linear probes of these
presets, so no preset has a target number; mnist5k is a smoke run of a few
minutes on a CPU.
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.weight_decay": 5e-4,
        "optimizer.exclude_bias_and_norm": False,
        "optimizer.warmup_steps": 0}
_IMAGENET = {"total_epochs": 50.0, **_SGD,
             "optimizer.learning_rate": 0.01 * 256 / 192}

RECIPES = {
    # Ours: an MLP head, biases and norms not decayed, the dataset's warm-up.
    "mnist5k": {"method.head_hidden_dim": 128, "method.head_layers": 2,
                "optimizer.name": "sgd", "optimizer.learning_rate": 0.2,
                "optimizer.weight_decay": 5e-4},
    "cifar": {"total_epochs": 200.0, **_SGD, "optimizer.learning_rate": 0.2},
    "imagenet100": _IMAGENET,
    "imagenet2012": _IMAGENET,
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("rotation", arg, RECIPES)
