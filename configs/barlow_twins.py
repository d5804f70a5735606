"""Barlow Twins (Zbontar et al. 2021) experiment configs.

    python experiments/pretrain.py --config=configs/barlow_twins.py:cifar10 \
        --workdir=runs/barlow_twins_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       92.10  ResNet-18, 1000 epochs (solo-learn)
  cifar100      70.90  ResNet-18, 1000 epochs (solo-learn)
  imagenet100   80.38  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  73.2   ResNet-50, 1000 epochs, batch 2048 (paper, Table 1;
                       the official `main.py` defaults: LARS with the
                       weights at 0.2 and biases and norms at 0.0048 per 256
                       images, these excluded from weight decay and LARS's
                       adaptation, wd 1e-6, λ = 0.0051, no loss scale,
                       zero-initialised residual BN)
  mnist5k       none published: a smoke run of a few minutes on a CPU.
Where the recipe differs from the official code:
docs/fidelity.md#barlow_twins.
"""

from configs import common

_SOLO_LEARN = {"method.proj_hidden_dim": 2048, "method.proj_dim": 2048,
               "method.scale": 0.1, "optimizer.learning_rate": 0.3,
               "optimizer.weight_decay": 1e-4}

RECIPES = {
    # 10 epochs, AdamW at 1.2e-2: kNN 0.953 with a 1024-1024 projector and
    # weight decay 0.05; 256-256: 0.947 (decay 0.05), 0.942 (1e-4).
    "mnist5k": {**_SOLO_LEARN, "method.proj_hidden_dim": 1024,
                "method.proj_dim": 1024, **common.MNIST5K_ADAMW,
                "optimizer.learning_rate": 1.2e-2,
                "optimizer.weight_decay": 0.05},
    "cifar": _SOLO_LEARN,
    "imagenet100": _SOLO_LEARN,
    "imagenet2012": {"optimizer.lars_rate_after_momentum": True,
                     "batch_size": 2048, "total_epochs": 1000.0,
                     "method.backbone_kwargs": {"zero_init_residual": True},
                     "optimizer.learning_rate": 0.2,
                     "optimizer.bias_lr_scale": 0.0048 / 0.2,
                     "optimizer.weight_decay": 1e-6},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("barlow_twins", arg, RECIPES)
