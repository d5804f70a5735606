"""MoCo v2 (Chen et al. 2020; solo-learn's symmetric "MoCo V2+") configs.

    python experiments/pretrain.py --config=configs/moco_v2.py:cifar10 \
        --workdir=runs/moco_v2_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       92.94  ResNet-18, 1000 epochs (solo-learn MoCo V2+)
  cifar100      69.89  ResNet-18, 1000 epochs (solo-learn MoCo V2+)
  imagenet100   78.20  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  71.1   ResNet-50, 800 epochs, batch 256 (MoCo v2 paper,
                       Table 2; its loss is not symmetrised), with the
                       official command (`main_moco.py --lr 0.03
                       --batch-size 256 --mlp --moco-t 0.2 --aug-plus --cos`
                       on 8 GPUs): SGD at 0.03 with weight decay 1e-4 on
                       every parameter, biases and BatchNorm included, a
                       cosine without warm-up, BatchNorm statistics per
                       eighth of the batch with the keys shuffled
                       (`bn_groups=8`, its per-GPU BatchNorm).
  mnist5k       none published: a smoke run of a few minutes on a CPU.

Where the recipes differ from the official code: docs/fidelity.md#moco_v2.
"""

from configs import common

_SOLO_LEARN = {"method.proj_hidden_dim": 2048, "method.proj_dim": 256,
               "method.momentum": common.cosine(0.99, 0.999),
               "method.symmetric": True,
               "optimizer.name": "sgd", "optimizer.learning_rate": 0.3,
               "optimizer.weight_decay": 1e-4}
# solo-learn crops down to 8% of the image, MoCo v2 to 20%.
_SOLO_LEARN_CROPS = {"method.augment.scale": (0.08, 1.0)}

RECIPES = {
    "mnist5k": {**_SOLO_LEARN, "method.proj_hidden_dim": 256,
                "method.proj_dim": 64, "method.queue_size": 4096,
                **common.MNIST5K_ADAMW},
    "cifar": {**_SOLO_LEARN, **_SOLO_LEARN_CROPS, "method.queue_size": 32768},
    "imagenet100": {**_SOLO_LEARN, **_SOLO_LEARN_CROPS,
                    "method.queue_size": 65536},
    "imagenet2012": {"batch_size": 256, "total_epochs": 800.0,
                     "optimizer.name": "sgd", "optimizer.learning_rate": 0.03,
                     "optimizer.weight_decay": 1e-4,
                     "optimizer.exclude_bias_and_norm": False,
                     "optimizer.warmup_steps": 0, "method.bn_groups": 8},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("moco_v2", arg, RECIPES)
