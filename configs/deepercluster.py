"""DeeperCluster (Caron et al. 2019) experiment configs.

    python experiments/pretrain.py --config=configs/deepercluster.py:cifar10 \
        --workdir=runs/deepercluster_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
The official optimizer (`main.py`, `src/model/model_factory.py`): SGD over
every parameter (`optimizer.exclude_bias_and_norm=False`), momentum 0.9,
weight decay 1e-5, the classifiers' SGD re-created at every clustering
(`DatasetUpdate.reset`); a clustering every 3 epochs
(`method.reassign_every`). On the smaller datasets one super-cluster
(m = 1: 4 super-classes, the rotations) holds all the clusters, as many as
DeepCluster's presets; ImageNet uses the paper's m = 4 (16 super-classes)
with DeepCluster's k = 10,000 (the paper's 320,000 are for 96M YFCC100M
images). Where the method and these recipes differ from the official code:
docs/fidelity.md#deepercluster.
Published numbers: the paper pre-trains VGG-16 on YFCC100M, so no preset
has a target number:
  cifar10/100   none published (ResNet-18, k = 500; learning rate 0.1 per
                256 images)
  imagenet100   none published (ResNet-18, k = 1000)
  imagenet2012  none published (ResNet-50, k = 10,000, m = 4) with the
                official optimizer: a constant learning rate of 0.1 for its
                batch of 48 × 64 = 3072 images
  mnist5k       ours: k = 100, m = 1, PCA to 64, SGD at 0.4. Its 10-epoch
                score is in the README's table.
"""

from configs import common
from ssljax.methods.deepercluster import (OFFICIAL_BATCH, SUB_CLASSIFIER,
                                          SUPER_CLASSIFIER)

# The official optimizer and clustering interval, on every dataset.
_OFFICIAL = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.1,
             "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-5,
             "optimizer.exclude_bias_and_norm": False,
             "method.reassign_every": common.epochs(3)}
_RESNET18 = {"method.proj_hidden_dim": 2048, "method.proj_dim": 2048,
             "method.pca_dim": 256, "method.num_super_clusters": 1}

RECIPES = {
    "mnist5k": {"method.proj_hidden_dim": 256, "method.proj_dim": 128,
                "method.num_clusters": 100, "method.num_super_clusters": 1,
                "method.pca_dim": 64, "optimizer.learning_rate": 0.4},
    "cifar": {**_RESNET18, "method.num_clusters": 500},
    "imagenet100": {**_RESNET18, "method.num_clusters": 1000},
    # The official rate, 0.1 for the whole batch (not scaled with it), kept
    # constant: no warm-up, every part at the peak.
    "imagenet2012": {"method.num_clusters": 10000, "total_epochs": 100.0,
                     "batch_size": OFFICIAL_BATCH,
                     "optimizer.learning_rate": 0.1 * 256 / OFFICIAL_BATCH,
                     "optimizer.warmup_steps": 0,
                     "optimizer.constant_lr_parts": (
                         "backbone", "projector", SUPER_CLASSIFIER,
                         SUB_CLASSIFIER)},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("deepercluster", arg, RECIPES, _OFFICIAL)
