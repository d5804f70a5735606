"""DINO (Caron et al. 2021) experiment configs.

    python experiments/pretrain.py --config=configs/dino.py:cifar10 \
        --workdir=runs/dino_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       89.52  ResNet-18, 1000 epochs, 2 crops (solo-learn)
  cifar100      66.76  ResNet-18, 1000 epochs, 2 crops (solo-learn)
  imagenet100   74.84  ResNet-18, 400 epochs, 2 crops (solo-learn, online
                       probe)
  imagenet2012  75.3   ResNet-50 (paper, Table 2), with the official ResNet-50
                       arguments: SGD 0.03, wd 1e-4, 2 global crops of scale
                       (0.14, 1) + 8 local of (0.05, 0.14); the run's length
                       is not in the paper, 100 epochs here (the official
                       default).
  mnist5k       none published: a smoke run of a few minutes on a CPU, with
                2 local crops of 12×12.
The teacher temperature warms up from 0.04 to 0.07 over 30 epochs (the
paper; 50 in solo-learn's CIFAR runs) and the last layer is frozen for the
first epoch.
"""

from configs import common

_SOLO_LEARN = {"method.hidden_dim": 2048, "method.bottleneck_dim": 256,
               "method.out_dim": 4096, "method.base_momentum": 0.9995,
               "method.teacher_temp_warmup_steps": common.epochs(50),
               "method.freeze_last_layer_steps": common.epochs(1),
               "optimizer.learning_rate": 0.3, "optimizer.weight_decay": 1e-6}

RECIPES = {
    "mnist5k": {"method.hidden_dim": 256, "method.bottleneck_dim": 64,
                "method.out_dim": 1024, "method.base_momentum": 0.99,
                "method.teacher_temp_warmup_steps": common.epochs(5),
                "method.freeze_last_layer_steps": common.epochs(1),
                "optimizer.learning_rate": 0.3,
                "optimizer.weight_decay": 1e-6},
    "cifar": _SOLO_LEARN,
    "imagenet100": {**_SOLO_LEARN, "batch_size": 128,
                    "method.augment.num_local": 0,
                    "method.augment.global_scale": (0.08, 1.0)},
    "imagenet2012": {"batch_size": 512,
                     "method.augment.global_scale": (0.14, 1.0),
                     "method.augment.local_scale": (0.05, 0.14),
                     "method.teacher_temp_warmup_steps": common.epochs(30),
                     "method.freeze_last_layer_steps": common.epochs(1),
                     "optimizer.name": "sgd", "optimizer.learning_rate": 0.03,
                     "optimizer.weight_decay": 1e-4},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("dino", arg, RECIPES)
