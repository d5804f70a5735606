"""Backbones and heads as functional `Model`s: `init(rng, x) -> (params,
model_state)`, `apply(params, model_state, x, *, train) -> (outputs,
model_state)` (see `ssljax.models.base`).

Both trees are plain nested dicts of arrays (valid pytrees for `jax.tree.map`,
sharding, donation and orbax). `params` are the trainable leaves,
`model_state` the BatchNorm running statistics (momentum 0.9, eps 1e-5). With
`train=True` BN normalises with batch statistics (global over a sharded batch
under `jax.jit`) and returns updated running statistics; with `train=False` it
uses the running statistics and returns `model_state` unchanged. Every factory
takes `dtype` (computation, e.g. `jnp.bfloat16`) and `param_dtype` (default
float32).

Backbones, images [B, H, W, C] -> features [B, D]:
  get(name, **kwargs)   "resnet18" | "resnet34" | "resnet50" (D = 512, 512,
                        2048; `stem="imagenet"|"cifar"`, `zero_init_residual`),
                        "vit_tiny" | "vit_small" (D = 192, 384; `patch_size`,
                        `image_size`, `depth`, `pool="cls"|"mean"`,
                        `pos_embed="learned"|"sincos"`, `mask_token`,
                        `drop_path_rate`, `remat`; `vit_base`, D = 768, is
                        `models.vit_base`),
                        "tiny_cnn" (D = `width`, default 8; for tests),
                        "small_cnn" (D = 128; the mnist5k recipes).
  The input channels are read from the example input at `init`.

Heads, [B, in_dim] -> [B, out] (`in_dim=None` reads it at `init`):
  projector(in_dim, hidden_dim, out_dim, num_layers=2, last_bn=False)
      (Linear-BN-ReLU) × (num_layers − 1), Linear [, BN without affine].
  predictor(in_dim, hidden_dim, out_dim)        Linear-BN-ReLU-Linear.
  dino_head(in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256,
            num_layers=3, norm_last_layer=True)
      MLP with GELU, l2-normalise, weight-normed last layer W = g·V/||V||;
      its params are under "last_layer" (`DINO_LAST_LAYER`) for freezing.
  prototypes(in_dim, num_prototypes)            scores = normalize(z) · C;
      `normalize_prototypes(params)` makes each prototype (column) unit-norm.

Composition:
  compose(backbone, *, projector=None, predictor=None, prototypes=None)
      one `Model` with outputs {"features", "projection", "prediction",
      "scores"} (the keys of the parts given) and params/model_state
      {"backbone", "projector", "predictor", "prototypes"}.

Masked image modelling (`ssljax.models.vit`, `ssljax.models.masking`):
  ViT `apply` keywords `mask` (mask tokens in place), `keep`/`keep_valid`
  (token dropping), `tokens=True` (all output tokens); `token_predictor`,
  the MAE decoder / I-JEPA predictor; `layer_ids(params)` for layer-wise
  learning-rate decay; samplers `random_masking` (MAE), `block_mask` and
  `ibot_masks` (BEiT/iBOT), `multiblock_masks` (I-JEPA); `patchify`.

Convolutions (`ssljax.models.conv`; every convolutional model uses them):
  conv2d(x, kernel, *, strides, padding), conv_transpose2d(...) and the nnx
  drop-ins `Conv`, `ConvTranspose` (nnx.Conv's parameters): XLA's
  convolution on GPU/TPU, on a CPU a custom VJP whose gradients are im2col
  matrix products and phase-split convolutions (several times faster).

Your own networks:
  from_nnx(module_or_builder), from_builder(build), from_linen(module,
  train_arg="train").
"""

from ssljax.models.adapters import from_builder, from_linen, from_nnx
from ssljax.models.base import Model
from ssljax.models.compose import OUTPUT_KEYS, compose
from ssljax.models.conv import (Conv, ConvTranspose, conv2d, conv_transpose2d,
                                transpose_padding)
from ssljax.models.heads import (DINO_LAST_LAYER, PROTOTYPES, DINOHead, MLP,
                                 Prototypes, WeightNormLinear, dino_head,
                                 normalize_prototypes, predictor, projector,
                                 prototypes, weight_norm)
from ssljax.models.registry import BACKBONES, get
from ssljax.models.resnet import (ResidualBlock, ResNet, resnet18, resnet34,
                                  resnet50)
from ssljax.models.tiny import TinyCNN, small_cnn, tiny_cnn
from ssljax.models.masking import (MultiBlock, RandomMasking, block_mask,
                                   ibot_masks, max_block_area,
                                   multiblock_masks, patchify,
                                   random_masking, unpatchify)
from ssljax.models.vit import (POSITION_EMBEDDINGS, VIT_SIZES, EncoderBlock,
                               TokenPredictor, VisionTransformer, drop_path,
                               layer_ids, sincos_position_embedding,
                               token_predictor, vit_base, vit_small, vit_tiny)

__all__ = [
    "BACKBONES", "DINOHead", "DINO_LAST_LAYER", "EncoderBlock", "MLP", "Model",
    "OUTPUT_KEYS", "PROTOTYPES", "Prototypes", "ResNet", "ResidualBlock",
    "TinyCNN", "VisionTransformer", "WeightNormLinear", "compose", "dino_head",
    "from_builder", "from_linen", "from_nnx", "get", "normalize_prototypes",
    "predictor", "projector", "prototypes", "resnet18", "resnet34",
    "resnet50", "small_cnn", "tiny_cnn", "vit_small", "vit_tiny", "weight_norm",
    # ViTs for masked image modelling and their mask samplers.
    "MultiBlock", "POSITION_EMBEDDINGS", "RandomMasking", "TokenPredictor",
    "VIT_SIZES", "block_mask", "drop_path", "ibot_masks", "layer_ids",
    "max_block_area", "multiblock_masks", "patchify", "random_masking",
    "sincos_position_embedding", "token_predictor", "unpatchify", "vit_base",
    # Convolutions with a fast CPU backward pass.
    "Conv", "ConvTranspose", "conv2d", "conv_transpose2d", "transpose_padding",
]
