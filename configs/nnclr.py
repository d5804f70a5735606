"""NNCLR (Dwibedi et al. 2021) experiment configs.

    python experiments/pretrain.py --config=configs/nnclr.py:cifar10 \
        --workdir=runs/nnclr_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       91.88  ResNet-18, 1000 epochs (solo-learn)
  cifar100      69.62  ResNet-18, 1000 epochs (solo-learn)
  imagenet100   79.80  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  75.4   ResNet-50, 1000 epochs, batch 4096 (paper, Table 1)
  mnist5k       none published: a smoke run of a few minutes on a CPU.
NNCLR has no official code; where the recipe differs from the paper and
solo-learn: docs/fidelity.md#nnclr.
"""

from configs import common

_SOLO_LEARN = {"method.proj_hidden_dim": 2048, "method.proj_dim": 256,
               "method.pred_hidden_dim": 4096, "method.temperature": 0.2,
               "method.queue_size": 65536, "optimizer.learning_rate": 0.4,
               "optimizer.weight_decay": 1e-5}

RECIPES = {
    # 10 epochs: kNN 0.950 at AdamW's rate 1.2e-2, 0.947 at 4e-3 (joint
    # BatchNorm).
    "mnist5k": {**_SOLO_LEARN, "method.proj_hidden_dim": 256,
                "method.proj_dim": 64, "method.pred_hidden_dim": 256,
                "method.queue_size": 2048, **common.MNIST5K_ADAMW,
                "optimizer.learning_rate": 1.2e-2},
    "cifar": _SOLO_LEARN,
    "imagenet100": _SOLO_LEARN,
    "imagenet2012": {"total_epochs": 1000.0, "optimizer.learning_rate": 0.3,
                     "optimizer.weight_decay": 1e-6},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("nnclr", arg, RECIPES)
