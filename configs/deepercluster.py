"""DeeperCluster (Caron et al. 2019) experiment configs.

    python experiments/pretrain.py --config=configs/deepercluster.py:cifar10 \
        --workdir=runs/deepercluster_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: the official SGD (learning rate 0.1, momentum 0.9, weight decay
1e-5); the training loop re-clusters every `method.reassign_epochs` (3)
epochs. On the smaller datasets one super-cluster (m = 1, the official
default: 4 super-classes, the rotations) holds all the clusters, as many as
DeepCluster's presets; ImageNet uses the paper's m = 4 (16 super-classes)
with DeepCluster's k = 10,000 (the paper's 320,000 are for 96M YFCC100M
images).
Published numbers: the paper pre-trains VGG-16 on YFCC100M, so no preset
has a target number:
  cifar10/100   none published (ResNet-18, k = 500)
  imagenet100   none published (ResNet-18, k = 1000)
  imagenet2012  none published (ResNet-50, k = 10,000, m = 4)
  mnist5k       ours, about a minute on a CPU: k = 100, m = 1, PCA to
                64. With the training loop, 30 epochs reached kNN top-1
                0.959, linear 0.978 (randomly initialised network: kNN
                0.933; raw pixels: about 0.935).
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.1,
        "optimizer.weight_decay": 1e-5}
_RESNET18 = {**_SGD, "method.proj_hidden_dim": 2048, "method.proj_dim": 2048,
             "method.pca_dim": 256, "method.num_super_clusters": 1}

RECIPES = {
    "mnist5k": {**_SGD, "method.proj_hidden_dim": 256, "method.proj_dim": 128,
                "method.num_clusters": 100, "method.num_super_clusters": 1,
                "method.pca_dim": 64, "optimizer.learning_rate": 0.4},
    "cifar": {**_RESNET18, "method.num_clusters": 500},
    "imagenet100": {**_RESNET18, "method.num_clusters": 1000},
    "imagenet2012": {**_SGD, "method.num_clusters": 10000,
                     "total_epochs": 100.0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("deepercluster", arg, RECIPES)
