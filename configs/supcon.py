"""SupCon (Khosla et al. 2020) experiment configs — supervised: the batches
must carry labels.

    python experiments/pretrain.py --config=configs/supcon.py:cifar10 \
        --workdir=runs/supcon_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       93.82  ResNet-18, 1000 epochs (solo-learn)
  cifar100      70.38  ResNet-18, 1000 epochs (solo-learn)
  imagenet100   84.40  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  78.7   ResNet-50 (paper, Table 2); T = 0.1 and LARS as in
                       the paper, batch and schedule reduced to 4096 and 350
                       epochs (the paper's longest runs use 6144 and 700).
  mnist5k       none published: a smoke run of a few minutes on a CPU.
The CIFAR and ImageNet-100 presets are solo-learn's: its SimCLR views with
blur, each view its own forward call, a 2048-wide head and the loss without
SupContrast's T / T_base scaling (`base_temperature` = `temperature`).
Where the recipe differs from the official code: docs/fidelity.md#supcon.
"""

from configs import common

_SOLO_LEARN = {"method.proj_hidden_dim": 2048, "method.proj_dim": 256,
               "method.temperature": 0.2, "method.base_temperature": 0.2,
               "optimizer.name": "sgd", "optimizer.learning_rate": 0.4,
               "optimizer.weight_decay": 1e-5}
# solo-learn's "symmetric" views (SimCLR's, blur p 0.5 also on CIFAR) and
# its per-crop forward passes.
_SOLO_LEARN_VIEWS = {"method.augment.scale": (0.08, 1.0),
                     "method.augment.brightness": 0.8,
                     "method.augment.contrast": 0.8,
                     "method.augment.saturation": 0.8,
                     "method.augment.hue": 0.2,
                     "method.augment.blur_prob": 0.5,
                     "method.view_batchnorm": "per_view"}

RECIPES = {
    "mnist5k": {**_SOLO_LEARN, "method.proj_hidden_dim": 256,
                "method.proj_dim": 64},
    "cifar": {**_SOLO_LEARN, **_SOLO_LEARN_VIEWS},
    "imagenet100": {**_SOLO_LEARN, **_SOLO_LEARN_VIEWS,
                    "method.proj_dim": 512, "optimizer.learning_rate": 0.5},
    "imagenet2012": {"total_epochs": 350.0, "optimizer.learning_rate": 0.3,
                     "optimizer.weight_decay": 1e-6},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("supcon", arg, RECIPES)
