"""SimCLR (Chen et al. 2020) experiment configs.

    python experiments/pretrain.py --config=configs/simclr.py:cifar10 \
        --workdir=runs/simclr_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       90.74  ResNet-18, 1000 epochs (solo-learn)
  cifar100      65.78  ResNet-18, 1000 epochs (solo-learn)
  imagenet100   77.64  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  69.3   ResNet-50, 1000 epochs, batch 4096 (paper, Table 6)
  mnist5k       none published; the default run: kNN > 0.95 and linear
                > 0.95 in about 3 minutes on a 2-core CPU (raw pixels: kNN
                0.948, linear 0.889).
"""

from configs import common

RECIPES = {
    # AdamW and batch 128 (930 steps): kNN 0.966 / linear 0.972 against
    # 0.944 / 0.971 with LARS at batch 256 (sweep in the README).
    "mnist5k": {"method.proj_hidden_dim": 256, "method.proj_dim": 64,
                "method.temperature": 0.2, **common.MNIST5K_ADAMW},
    "cifar": {"method.proj_hidden_dim": 2048, "method.proj_dim": 256,
              "method.temperature": 0.2, "optimizer.learning_rate": 0.4,
              "optimizer.weight_decay": 1e-4},
    "imagenet100": {"method.proj_hidden_dim": 4096, "method.proj_dim": 512,
                    "method.temperature": 0.2, "batch_size": 128,
                    "optimizer.learning_rate": 0.3,
                    "optimizer.weight_decay": 1e-4},
    "imagenet2012": {"total_epochs": 1000.0, "optimizer.learning_rate": 0.3,
                     "optimizer.weight_decay": 1e-6},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("simclr", arg, RECIPES)
