"""DeepCluster (Caron et al. 2018) experiment configs.

    python experiments/pretrain.py --config=configs/deepcluster.py:cifar10 \
        --workdir=runs/deepcluster_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
The official optimizer (`main.py`): SGD over every parameter
(`optimizer.exclude_bias_and_norm=False`), momentum 0.9, weight decay 1e-5,
learning rate 0.05 for a batch of 256, and for the classifier its own SGD
without momentum (`optimizer.momentum_free_parts`); one clustering per
epoch (`method.reassign_every`). The number of clusters over-clusters each
dataset, about 10× its classes and 40-130 images per cluster (the paper's
10,000 clusters for ImageNet's 1,000 classes and 1.28M images). Where the
method and these recipes differ from the official code:
docs/fidelity.md#deepcluster.
Published numbers: the paper reports linear probes of AlexNet's
convolutional layers on ImageNet (conv5 36.1, best conv4 39.8 top-1,
Table 1) and none for ResNets, so no preset has a target number:
  cifar10/100   none published (ResNet-18, k = 500)
  imagenet100   none published (ResNet-18, k = 1000)
  imagenet2012  none published for ResNet-50: the official run's settings
                (k = 10,000, batch 256, a constant learning rate of 0.05,
                200 epochs: the official script's default length)
  mnist5k       ours: k = 100 (10× the digits' classes, 40 images per
                cluster), PCA to 64 of the head's 128 dimensions, SGD at
                0.4. Its 10-epoch score is in the README's table.
"""

from configs import common
from ssljax.methods.deepcluster import CLASSIFIER

# The official optimizer and clustering interval, on every dataset.
_OFFICIAL = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.05,
             "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-5,
             "optimizer.exclude_bias_and_norm": False,
             "method.reassign_every": common.epochs(1)}
# The 2-layer head of ResNet presets: as wide as AlexNet's fc6-fc7 (4096)
# for ResNet-50, and as the backbone's features for ResNet-18.
_RESNET18_HEAD = {"method.proj_hidden_dim": 2048, "method.proj_dim": 2048}

RECIPES = {
    "mnist5k": {"method.proj_hidden_dim": 256, "method.proj_dim": 128,
                "method.num_clusters": 100, "method.pca_dim": 64,
                "optimizer.learning_rate": 0.4},
    "cifar": {**_RESNET18_HEAD, "method.num_clusters": 500},
    "imagenet100": {**_RESNET18_HEAD, "method.num_clusters": 1000},
    # `main.py` keeps its rate constant: no warm-up, every part at the peak.
    "imagenet2012": {"total_epochs": 200.0, "batch_size": 256,
                     "optimizer.warmup_steps": 0,
                     "optimizer.constant_lr_parts": ("backbone", "projector",
                                                     CLASSIFIER)},
}


def get_config(arg: str = "mnist5k"):
  config = common.get_config("deepcluster", arg, RECIPES, _OFFICIAL)
  # The classifier's optimizer has no momentum (the official `optimizer_tl`).
  # `momentum_free_parts` is not a field of every config (configs/common.py),
  # so it is added here, after the recipe and the `arg` overrides.
  with config.unlocked():
    config.optimizer.momentum_free_parts = (CLASSIFIER,)
  return config
