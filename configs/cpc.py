"""CPC (van den Oord et al. 2018; Hénaff et al. 2020) experiment configs:
patch grids, a row-causal context network and InfoNCE over all patches of
the batch.

    python experiments/pretrain.py --config=configs/cpc.py:cifar10 \
        --workdir=runs/cpc_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1: imagenet2012 48.7 (CPC v1, ResNet-101 v2, 7×7
grids of 64-pixel patches) and 71.5 (CPC v2, ResNet-161); the presets use
the papers' grid geometry with smaller backbones and do not target these.
mnist5k is a smoke run of a few minutes on a CPU (5×5 grids of 12-pixel
patches); cifar uses 7×7 grids of 8-pixel patches.
"""

from configs import common

# CPC v1 trains with Adam at 2e-4 (batch 32 per GPU); AdamW at batch 256.
_ADAM = {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3,
         "optimizer.weight_decay": 1e-5}

RECIPES = {
    "mnist5k": {**_ADAM, "method.patch_size": 12, "method.patch_stride": 4,
                "method.prediction_steps": 2, "method.context_dim": 64},
    "cifar": {**_ADAM, "method.patch_size": 8, "method.patch_stride": 4,
              "method.prediction_steps": 3, "method.context_dim": 256,
              "total_epochs": 200.0},
    "imagenet100": {**_ADAM, "total_epochs": 100.0},
    "imagenet2012": {**_ADAM, "batch_size": 512, "total_epochs": 100.0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("cpc", arg, RECIPES)
