"""SeLa (Asano et al. 2020) experiment configs.

    python experiments/pretrain.py --config=configs/sela.py:cifar10 \
        --workdir=runs/sela_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: the official SGD (momentum 0.9, weight decay 1e-5; learning
rate 0.05 per 256 images on ImageNet, 0.03 for a batch of 128 on CIFAR);
labels are re-optimised every `method.reassign_epochs` epochs.
Published linear top-1 that the presets target:
  imagenet2012  61.5   ResNet-50, SeLa [3k × 10]: 10 heads of 3000
                       clusters, 400 epochs, 100 label updates (official
                       README)
  cifar10/100   none published for ResNet-18; the preset follows the
                official CIFAR script, written for an AlexNet (10 heads of
                128 clusters, 400 epochs, a label update per epoch)
  imagenet100   none published (ResNet-18, 10 heads of 300 clusters)
  mnist5k       ours, about two minutes on a CPU: 10 heads of 100
                clusters, a label update per epoch. With the training loop,
                30 epochs reached kNN top-1 0.967, linear 0.974 (randomly
                initialised network: kNN 0.933; raw pixels: about 0.935).
"""

from configs import common

_SGD = {"optimizer.name": "sgd", "optimizer.weight_decay": 1e-5}

RECIPES = {
    "mnist5k": {**_SGD, "optimizer.learning_rate": 0.4,
                "method.num_clusters": 100, "method.reassign_epochs": 1.0},
    "cifar": {**_SGD, "optimizer.learning_rate": 0.06, "total_epochs": 400.0,
              "method.num_clusters": 128, "method.reassign_epochs": 1.0},
    "imagenet100": {**_SGD, "optimizer.learning_rate": 0.05,
                    "method.num_clusters": 300},
    "imagenet2012": {**_SGD, "optimizer.learning_rate": 0.05,
                     "batch_size": 256, "total_epochs": 400.0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("sela", arg, RECIPES)
