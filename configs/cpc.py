"""CPC (van den Oord et al. 2018; Hénaff et al. 2020) experiment configs:
patch grids, a PixelCNN-style context network and InfoNCE over all patches
of the batch.

    python experiments/pretrain.py --config=configs/cpc.py:cifar10 \
        --workdir=runs/cpc_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1: imagenet2012 48.7 (CPC v1, ResNet-101 v2, 7×7
grids of 64-pixel patches) and 71.5 (CPC v2, ResNet-161); the presets use
the papers' grid geometry and CPC v2's loss (predicting 3 rows ahead) with
smaller backbones and do not target these (ImageNet views of 224 pixels
give 6×6 grids). mnist5k is a run of about two minutes on a CPU (3×3 grids
of 14-pixel patches, features concatenated over the grid); cifar uses 7×7
grids of 8-pixel patches. How this compares with the papers:
docs/fidelity.md#cpc.
"""

from configs import common

# CPC v1 trains with Adam at 2e-4 (batch 32 per GPU); AdamW at batch 256.
_ADAM = {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3,
         "optimizer.weight_decay": 1e-5}

# BYOL's two views (None: the preset's value) instead of CPC v1's one.
_BYOL_PAIR = {"method.augment.preset": "byol", "method.augment.ratio": None,
              "method.augment.jitter_prob": None,
              "method.augment.grayscale_prob": None, "method.num_views": 2}

RECIPES = {
    # 10 epochs: 5×5 grids of 12-pixel patches, mean-pooled, ran at 30
    # images/s to kNN 0.788 (the loss contrasts every patch of the batch
    # with every other); 3×3 grids of 14 pixels, 330 images/s, kNN 0.850
    # mean-pooled and 0.947 concatenated; predicting 1 row ahead instead
    # of 2: 0.953. A 3-row grid cannot skip the nearest rows as CPC v2
    # does; the views are those runs' (BYOL's pair, each view a sample).
    "mnist5k": {**common.MNIST5K_ADAMW, "method.patch_size": 14,
                "method.patch_stride": 7, "method.grid_pooling": "concat",
                "method.prediction_steps": 1, "method.skip_steps": 0,
                "method.context_dim": 64, **_BYOL_PAIR},
    "cifar": {**_ADAM, "method.patch_size": 8, "method.patch_stride": 4,
              "total_epochs": 200.0},
    "imagenet100": {**_ADAM, "total_epochs": 100.0},
    "imagenet2012": {**_ADAM, "batch_size": 512, "total_epochs": 100.0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("cpc", arg, RECIPES)
