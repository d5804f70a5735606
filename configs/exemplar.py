"""Exemplar CNN (Dosovitskiy et al. 2014) experiment configs.

    python experiments/pretrain.py --config=configs/exemplar.py:cifar10 \
        --workdir=runs/exemplar_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Surrogate classes: the paper's 8000 on 32-pixel data (cifar, 24 MB per
device), 1000 on mnist5k (a fifth of its digits), 2000 on 224-pixel
ImageNet (300 MB per device, the set is replicated). Optimizer: SGD with
momentum, learning rate 0.1 per 256 images (ours; the paper gives no
schedule beyond its Caffe/cuda-convnet defaults,
docs/fidelity.md#exemplar). mnist5k is ours: AdamW and a head of 128
units.
Published numbers: the paper reports STL-10, CIFAR-10 and Caltech-101
accuracies of SVMs on pooled features of its own networks, not the ResNet
linear probes of these presets, so no preset has a target number; mnist5k
is a smoke run of a few minutes on a CPU.
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.1,
        "optimizer.weight_decay": 5e-4}

RECIPES = {
    # 10 epochs: kNN 0.954 at AdamW's rate 1.2e-2, 0.943 at 4e-3.
    "mnist5k": {"method.head_hidden_dim": 128, "method.num_exemplars": 1000,
                **common.MNIST5K_ADAMW, "optimizer.learning_rate": 1.2e-2},
    "cifar": {"total_epochs": 100.0, **_SGD},
    "imagenet100": {"total_epochs": 100.0, "method.num_exemplars": 2000,
                    **_SGD},
    "imagenet2012": {"total_epochs": 100.0, "method.num_exemplars": 2000,
                     **_SGD},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("exemplar", arg, RECIPES)
