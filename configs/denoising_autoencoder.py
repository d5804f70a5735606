"""Denoising autoencoder (Vincent et al. 2008) experiment configs.

    python experiments/pretrain.py \
        --config=configs/denoising_autoencoder.py:cifar10 \
        --workdir=runs/denoising_autoencoder_cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Optimizer: AdamW (learning rate 1e-3 per 256 images), our choice for the
end-to-end conv autoencoder (the paper trains shallow layers one at a time
with plain SGD, docs/fidelity.md#denoising_autoencoder); masking noise of
25% (the paper's ν range is 10-40%).
mnist5k is ours, with random crops of half to all of the digit.
Published numbers: the paper evaluates stacked shallow autoencoders on
MNIST variants by fine-tuning, none of the linear probes of these presets,
so no preset has a target number; mnist5k is a smoke run of a few minutes
on a CPU.
"""

from configs import common

_ADAMW = {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3,
          "optimizer.weight_decay": 1e-4}

RECIPES = {
    # 10 epochs: kNN 0.950 at 730 images/s; decoder width 32, batch 256 and
    # rate 1e-3 gave 0.941 at 191 images/s (the decoder's 4×4 transposed
    # convolutions cost most of the step).
    "mnist5k": {"method.decoder_width": 16,
                "method.augment.ratio": (3 / 4, 4 / 3),
                **common.MNIST5K_ADAMW},
    "cifar": {"total_epochs": 100.0, **_ADAMW},
    "imagenet100": {"total_epochs": 100.0, **_ADAMW},
    "imagenet2012": {"total_epochs": 100.0, **_ADAMW},
}


def get_config(arg: str = "mnist5k"):
  return common.get_config("denoising_autoencoder", arg, RECIPES)
