"""SwAV (Caron et al. 2020) experiment configs.

    python experiments/pretrain.py --config=configs/swav.py:cifar10 \
        --workdir=runs/swav_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       89.17  ResNet-18, 1000 epochs, 2 crops (solo-learn)
  cifar100      64.88  ResNet-18, 1000 epochs, 2 crops (solo-learn)
  imagenet100   74.04  ResNet-18, 400 epochs, 2 crops (solo-learn, online
                       probe)
  imagenet2012  75.3   ResNet-50, 800 epochs, batch 4096, 2×224 + 6×96 crops
                       (paper, Table 1; `scripts/swav_800ep_pretrain.sh`:
                       LARC over every parameter at 4.8 = 0.3 per 256
                       images, wd 1e-6, no queue, prototypes frozen for 313
                       iterations)
  mnist5k       none published: a smoke run of a few minutes on a CPU, with
                the two global crops only.
solo-learn's small-batch recipe (CIFAR, ImageNet-100) adds a queue of 3840
features from epoch 50, freezes the prototypes for 2 epochs and runs each
view on its own. Where the recipe differs from the official code:
docs/fidelity.md#swav.
"""

from configs import common

_SOLO_LEARN = {"method.proj_hidden_dim": 2048, "method.proj_dim": 128,
               "method.num_prototypes": 3000, "method.queue_size": 3840,
               "method.queue_start_steps": common.epochs(50),
               "method.freeze_prototypes_steps": common.epochs(2),
               # solo-learn keeps SwAV's blur on CIFAR ("symmetric" views).
               "method.augment.blur_prob": 0.5,
               "method.view_batchnorm": "per_view",
               "optimizer.learning_rate": 0.6, "optimizer.weight_decay": 1e-6}

RECIPES = {
    "mnist5k": {"method.proj_hidden_dim": 256, "method.proj_dim": 64,
                "method.num_prototypes": 100, "method.queue_size": 1024,
                "method.queue_start_steps": common.epochs(5),
                "method.freeze_prototypes_steps": common.epochs(1),
                # The mild jitter of the other mnist5k recipes.
                "method.augment.brightness": 0.4,
                "method.augment.contrast": 0.4,
                # 10 epochs: kNN 0.966 (LARS at 0.6: 0.946).
                **common.MNIST5K_ADAMW, "optimizer.learning_rate": 1.2e-2,
                "optimizer.weight_decay": 0.2},
    "cifar": _SOLO_LEARN,
    "imagenet100": {**_SOLO_LEARN, "method.augment.num_local": 0,
                    "method.augment.global_scale": (0.08, 1.0)},
    # The factory's defaults: the 800-epoch script's crops, K, T, ε and 313
    # frozen iterations; LARC adapts and decays every parameter.
    "imagenet2012": {"optimizer.lars_rate_after_momentum": True,
                     "total_epochs": 800.0, "optimizer.learning_rate": 0.3,
                     "optimizer.weight_decay": 1e-6,
                     "optimizer.exclude_bias_and_norm": False},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("swav", arg, RECIPES)
