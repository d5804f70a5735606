"""DeepCluster (Caron et al. 2018) experiment configs.

    python experiments/pretrain.py --config=configs/deepcluster.py:cifar10 \
        --workdir=runs/deepcluster_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: the paper's SGD (learning rate 0.05 for a batch of 256,
momentum 0.9, weight decay 1e-5); the training loop re-clusters every
`method.reassign_epochs` epochs. The number of clusters over-clusters each
dataset, about 10× its classes and 40-130 images per cluster (the paper's
10,000 clusters for ImageNet's 1,000 classes and 1.28M images).
Published numbers: the paper reports linear probes of AlexNet's
convolutional layers on ImageNet (conv5 36.1, best conv4 39.8 top-1,
Table 1) and none for ResNets, so no preset has a target number:
  cifar10/100   none published (ResNet-18, k = 500)
  imagenet100   none published (ResNet-18, k = 1000)
  imagenet2012  none published for ResNet-50 (k = 10,000, 200 epochs: the
                official script's default length)
  mnist5k       ours, about two minutes on a CPU: k = 100 (10× the
                digits' classes, 40 images per cluster), PCA to 64 of the
                head's 128 dimensions. With the training loop, 30 epochs
                reached kNN top-1 0.961, linear 0.976 (randomly initialised
                network: kNN 0.933; raw pixels: about 0.935).
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.05,
        "optimizer.weight_decay": 1e-5}
# The 2-layer head of ResNet presets: as wide as AlexNet's fc6-fc7 (4096)
# for ResNet-50, and as the backbone's features for ResNet-18.
_RESNET18_HEAD = {"method.proj_hidden_dim": 2048, "method.proj_dim": 2048}

RECIPES = {
    "mnist5k": {"method.proj_hidden_dim": 256, "method.proj_dim": 128,
                "method.num_clusters": 100, "method.pca_dim": 64,
                **_SGD, "optimizer.learning_rate": 0.4},
    "cifar": {**_SGD, **_RESNET18_HEAD, "method.num_clusters": 500},
    "imagenet100": {**_SGD, **_RESNET18_HEAD, "method.num_clusters": 1000},
    "imagenet2012": {**_SGD, "total_epochs": 200.0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("deepcluster", arg, RECIPES)
