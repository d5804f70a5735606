"""CLIP-style dual encoder (`ssljax.methods.clip`) experiment configs: two
towers on BYOL's two asymmetric views of each image, CLIP's symmetric
InfoNCE with a learned logit scale clamped to [1, 100] after each step.

    python experiments/pretrain.py --config=configs/clip.py:cifar10 \
        --workdir=runs/clip_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published numbers: none for these presets (CLIP pairs images with texts;
here both "modalities" are views of one image); mnist5k is a smoke run of a
few minutes on a CPU. The optimizer follows CLIP's ResNet recipe (AdamW,
β1 0.9, β2 0.999, weight decay 0.2, gains, biases and the logit scale not
decayed) at rates for these batch sizes. How this compares with the
official code: docs/fidelity.md#clip.
"""

from configs import common

_ADAMW = {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3,
          "optimizer.weight_decay": 0.2}

RECIPES = {
    # The mnist recipe drops the blur; restore the preset's asymmetric blur
    # (p 1.0 on view 1, 0.1 on view 2) so that the towers see two families.
    "mnist5k": {"method.proj_dim": 64, "method.augment.blur_prob": None,
                **common.MNIST5K_ADAMW},
    "cifar": {**_ADAMW, "method.proj_dim": 256},
    "imagenet100": {**_ADAMW, "method.proj_dim": 512},
    "imagenet2012": {**_ADAMW, "optimizer.learning_rate": 5e-4,
                     "total_epochs": 100.0},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("clip", arg, RECIPES)
