"""PCL (Li et al., ICLR 2021; PCL v2) experiment configs.

    python experiments/pretrain.py --config=configs/pcl.py:imagenet2012 \
        --workdir=runs/pcl_imagenet

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
The official optimizer (`main_pcl.py`): SGD over every parameter
(`optimizer.exclude_bias_and_norm=False`), momentum 0.9; clusterings once
per epoch (`method.cluster_every`) from the end of the warm-up
(`method.warmup_steps`). Where the method and these recipes differ from the
official code: docs/fidelity.md#pcl.
Published linear top-1 that the presets target:
  imagenet2012  67.6  ResNet-50, 200 epochs, batch 256, clusterings of
                      25k/50k/100k, 20 warm-up epochs, learning rate 0.03
                      with a cosine, weight decay 1e-4, per-GPU shuffling
                      BatchNorm over 8 GPUs (PCL v2, official
                      salesforce/PCL README and `main_pcl.py` defaults)
  cifar10, cifar100, imagenet100
                none published (PCL reports ImageNet, VOC and Places
                only): `configs/moco_v2.py`'s recipe (solo-learn's MoCo
                V2+ hyper-parameters, its queue included), clusterings
                scaled from ImageNet's ~51, 26 and 13 images per cluster,
                and a warm-up of 10% of the epochs, as the official 20 of
                200.
  mnist5k       none published: `configs/moco_v2.py`'s mnist5k recipe with
                20/40/80 clusters (200 to 50 digits each) from epoch 3 of
                30.
"""

from configs import common
from configs import moco_v2

_WARMUP_FRACTION = 0.1  # The official 20 warm-up epochs of 200.
# Every dataset: the official parameter groups and one clustering per epoch.
_OFFICIAL = {"optimizer.exclude_bias_and_norm": False,
             "method.cluster_every": common.epochs(1)}


def _pcl(family: str, num_clusters: tuple) -> dict:
  """MoCo v2's recipe for `family` with PCL's clusterings and warm-up; the
  loss keeps the official single direction (no `symmetric`)."""
  recipe = {k: v for k, v in moco_v2.RECIPES[family].items()
            if k != "method.symmetric"}
  total_epochs = recipe.get("total_epochs",
                            common.DATASET_RECIPES[family]["total_epochs"])
  return {**recipe, "method.num_clusters": num_clusters,
          "method.warmup_steps": common.epochs(
              int(_WARMUP_FRACTION * total_epochs))}


RECIPES = {
    "mnist5k": _pcl("mnist5k", (20, 40, 80)),
    "cifar": _pcl("cifar", (1000, 2000, 4000)),
    "imagenet100": _pcl("imagenet100", (2500, 5000, 10000)),
    "imagenet2012": {"batch_size": 256, "total_epochs": 200.0,
                     "method.warmup_steps": common.epochs(20),
                     "optimizer.name": "sgd", "optimizer.learning_rate": 0.03,
                     "optimizer.weight_decay": 1e-4,
                     "optimizer.warmup_steps": 0, "method.bn_groups": 8},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("pcl", arg, RECIPES, _OFFICIAL)
