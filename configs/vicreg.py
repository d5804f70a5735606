"""VICReg (Bardes, Ponce & LeCun 2022) experiment configs.

    python experiments/pretrain.py --config=configs/vicreg.py:cifar10 \
        --workdir=runs/vicreg_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       92.07  ResNet-18, 1000 epochs (solo-learn)
  cifar100      68.54  ResNet-18, 1000 epochs (solo-learn)
  imagenet100   79.22  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  73.2   ResNet-50, 1000 epochs, batch 2048 (paper, Table 1;
                       the official README's 1000-epoch command: LARS 0.2
                       excluding biases and norms, wd 1e-6, zero-initialised
                       residual BN)
  mnist5k       none published: a smoke run of a few minutes on a CPU.
Where the recipe differs from the official code: docs/fidelity.md#vicreg.
"""

from configs import common

# solo-learn's VICReg views: crops of scale (0.2, 1), solarisation p 0.1.
_SOLO_LEARN = {"method.proj_hidden_dim": 2048, "method.proj_dim": 2048,
               "method.augment.scale": (0.2, 1.0),
               "method.augment.solarize_prob": 0.1,
               "optimizer.learning_rate": 0.3, "optimizer.weight_decay": 1e-4}

RECIPES = {
    "mnist5k": {"method.proj_hidden_dim": 256, "method.proj_dim": 256,
                **common.MNIST5K_ADAMW},
    "cifar": _SOLO_LEARN,
    "imagenet100": _SOLO_LEARN,
    "imagenet2012": {"optimizer.lars_rate_after_momentum": True,
                     "batch_size": 2048, "total_epochs": 1000.0,
                     "method.backbone_kwargs": {"zero_init_residual": True},
                     "optimizer.learning_rate": 0.2,
                     "optimizer.weight_decay": 1e-6},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("vicreg", arg, RECIPES)
