"""SimSiam (Chen & He 2021) experiment configs.

    python experiments/pretrain.py --config=configs/simsiam.py:cifar10 \
        --workdir=runs/simsiam_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10       90.51  ResNet-18, 1000 epochs (solo-learn)
  cifar100      66.04  ResNet-18, 1000 epochs (solo-learn)
  imagenet100   74.54  ResNet-18, 400 epochs (solo-learn, online probe)
  imagenet2012  68.1   ResNet-50, 100 epochs, batch 512 (paper, Table 4;
                       the official README's command: SGD 0.05, wd 1e-4,
                       `--fix-pred-lr`, zero-initialised residual BN)
  mnist5k       none published: a smoke run of a few minutes on a CPU.
Every preset keeps the predictor's rate at its peak (the official
`--fix-pred-lr`, solo-learn's static predictor rate:
`optimizer.constant_lr_parts`); the SGD presets decay every parameter,
biases and BatchNorm included, as `torch.optim.SGD(model.parameters())`.
Where the recipe differs from the official code:
docs/fidelity.md#simsiam.
"""

from configs import common

_SOLO_LEARN = {"method.proj_hidden_dim": 2048,
               "method.augment.scale": (0.08, 1.0),
               "optimizer.name": "sgd", "optimizer.learning_rate": 0.5,
               "optimizer.weight_decay": 1e-5,
               "optimizer.exclude_bias_and_norm": False}
# solo-learn's views: on CIFAR "symmetric_weak" (MoCo v2's, crops down to
# 8%, blur kept at p 0.5), on ImageNet-100 "asymmetric" (BYOL's).
_SOLO_LEARN_CIFAR_VIEWS = {"method.augment.blur_prob": 0.5}
_SOLO_LEARN_IMAGENET100_VIEWS = {"method.augment.preset": "byol",
                                 "method.augment.saturation": 0.2}

RECIPES = {
    # 10 epochs, AdamW at 1.2e-2: kNN 0.954 with weight decay 0.05, 0.946
    # with 1e-4 (methods without negatives rely on weight decay, Tian et
    # al. 2021, "Understanding self-supervised learning dynamics").
    "mnist5k": {"method.proj_hidden_dim": 256,
                "method.proj_dim": 256, "method.pred_hidden_dim": 64,
                **common.MNIST5K_ADAMW, "optimizer.learning_rate": 1.2e-2,
                "optimizer.weight_decay": 0.05},
    "cifar": {**_SOLO_LEARN, **_SOLO_LEARN_CIFAR_VIEWS},
    "imagenet100": {**_SOLO_LEARN, **_SOLO_LEARN_IMAGENET100_VIEWS},
    # The projector's hidden width is the ResNet-50's 2048 features.
    "imagenet2012": {"batch_size": 512, "method.proj_hidden_dim": 2048,
                     "method.backbone_kwargs": {"zero_init_residual": True},
                     "optimizer.name": "sgd", "optimizer.learning_rate": 0.05,
                     "optimizer.weight_decay": 1e-4,
                     "optimizer.exclude_bias_and_norm": False,
                     "optimizer.warmup_steps": 0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("simsiam", arg, RECIPES,
                           {"optimizer.constant_lr_parts": ("predictor",)})
