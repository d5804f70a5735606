"""MAE: masked autoencoders.

He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable
Vision Learners", CVPR 2022; the official code (facebookresearch/mae).

Each image (one crop, flipped at random) is cut into N patches, of which a
random 75% are masked (`models.random_masking`). The encoder, a ViT with
fixed sin-cos position embeddings, sees only the N − K visible patches and
the CLS token; a narrow decoder (`models.token_predictor`: 8 blocks of
width 512) receives the encoded tokens and a shared mask token at every
masked position, and predicts the pixels of the masked patches:

    t̂ = (t − mean(t)) / √(var(t) + 10⁻⁶)     per patch (`norm_pix_loss`)
    loss = mean over masked patches n of mean_p (x_np − t̂_np)²

(`losses.mae`). `encode` is the encoder's CLS token on the whole image,
the feature the official linear probe reads (`main_linprobe.py`), or with
`eval_pool="mean"` the mean of its patch tokens, as the official
fine-tuning pools them (`main_finetune.py --global_pool`).

Defaults: the paper's ViT recipe (mask ratio 0.75, decoder 512-d × 8
blocks with 16 heads, normalised pixels as in the released
`--norm_pix_loss` commands), crops of scale (0.2, 1) with flips and no
colour changes, and `backbone="vit_base"` (the paper's main model is
ViT-L, which has no preset here). The ViT has no BatchNorm, so the method
has no `view_batchnorm`. Differences from the official code are listed in
docs/fidelity.md#mae.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.mae(
  ...     backbone="vit_tiny",
  ...     backbone_kwargs={"patch_size": 4, "image_size": 16, "depth": 1},
  ...     decoder_dim=16, decoder_depth=1, decoder_heads=2)
  >>> images = jnp.zeros((2, 16, 16, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(sorted(params), out.embeddings.shape)
  ['backbone', 'decoder'] (2, 192)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import losses, models
from ssljax.methods import _mim, _shared
from ssljax.methods.base import Method, StepOutput

EVAL_POOLS = ("cls", "mean")
# One crop of scale (0.2, 1), flipped half the time, nothing else
# (`main_pretrain.py`); "byol" makes two views, the method reads the first.
AUGMENT = _shared.augment_config(
    "byol", scale=(0.2, 1.0), jitter_prob=0.0, grayscale_prob=0.0,
    blur_prob=0.0, solarize_prob=0.0)


def mae(*, backbone: str = "vit_base", backbone_kwargs: Mapping | None = None,
        augment: Mapping = AUGMENT, dtype: str = "float32",
        mask_ratio: float = 0.75, decoder_dim: int = 512,
        decoder_depth: int = 8, decoder_heads: int = 16,
        norm_pix_loss: bool = True, eval_pool: str = "cls") -> Method:
  """MAE (see the module docstring).

  Args:
    backbone: a ViT preset ("vit_tiny", "vit_small", "vit_base").
    backbone_kwargs: its arguments (`patch_size`, `image_size`, `depth`,
      `remat`...); MAE's defaults are `pos_embed="sincos"`, `pool="cls"`.
    augment, dtype: as `methods.simclr`; the first view is the crop.
    mask_ratio: the masked fraction of the patches, in (0, 1).
    decoder_dim, decoder_depth, decoder_heads: the decoder.
    norm_pix_loss: normalise each target patch.
    eval_pool: `encode`'s feature: "cls", the [CLS] token (the official
      linear probe), or "mean", the mean of the patch tokens (the official
      fine-tuning's global pool, here after the encoder's final norm).
  """
  fn = "mae"
  if eval_pool not in EVAL_POOLS:
    raise ValueError(f"{fn}: `eval_pool` must be one of {EVAL_POOLS}, got "
                     f"{eval_pool!r}.")
  if not 0 < mask_ratio < 1:
    raise ValueError(f"{fn}: `mask_ratio` must be in (0, 1), got "
                     f"{mask_ratio}.")
  _mim.check_heads(decoder_dim, decoder_heads, "decoder_dim", fn)
  encoder = _mim.vit(backbone, backbone_kwargs, dtype, fn,
                     defaults={"pos_embed": "sincos", "pool": "cls"},
                     required={"pool": "cls"})
  setup = _shared.setup(encoder.model, None, augment, dtype)
  p = encoder.patch_size

  def decoder(channels: int) -> models.Model:
    return models.token_predictor(
        encoder.dim, p * p * channels, dim=decoder_dim, depth=decoder_depth,
        num_heads=decoder_heads, cls_token=True, **setup.kw)

  def init(rng, batch):
    params, model_state = _shared.initialize(setup, encoder.model, rng,
                                             batch)
    view = jax.eval_shape(lambda: _mim.one_view(setup, rng, batch))
    rows, cols = _mim.grid(view, p)
    context = jnp.zeros((1, 1 + int(rows * cols * (1 - mask_ratio)),
                         encoder.dim))
    dec_params, dec_state = decoder(view.shape[-1]).init(
        jax.random.fold_in(rng, 1), context)
    return ({"backbone": params, "decoder": dec_params},
            {"backbone": model_state, "decoder": dec_state}, ())

  def loss(params, model_state, method_state, batch, rng, step):
    del method_state, step  # Nothing is carried between steps.
    view_rng, mask_rng = jax.random.split(rng)
    x = _mim.one_view(setup, view_rng, batch)
    rows, cols = _mim.grid(x, p)
    masking = models.random_masking(mask_rng, x.shape[0], rows * cols,
                                    mask_ratio)
    tokens, enc_state = encoder.model.apply(
        params["backbone"], model_state["backbone"], x, train=True,
        keep=masking.keep, tokens=True)
    prediction, dec_state = decoder(x.shape[-1]).apply(
        params["decoder"], model_state["decoder"], tokens, train=True,
        grid=(rows, cols), context_index=masking.keep,
        target_index=masking.masked)
    target = jnp.take_along_axis(models.patchify(x, p),
                                 masking.masked[..., None], axis=1)
    value = losses.mae(prediction, target, norm_pix=norm_pix_loss)
    return value, StepOutput(
        model_state={"backbone": enc_state, "decoder": dec_state},
        metrics={}, update=(),
        embeddings=jax.lax.stop_gradient(tokens[:, 0]))

  def pool(tokens):
    return tokens[:, 0] if eval_pool == "cls" else jnp.mean(tokens[:, 1:], 1)

  def encode(params, model_state, method_state, images):
    del method_state  # MAE carries none.
    tokens, _ = encoder.model.apply(
        params["backbone"], model_state["backbone"],
        setup.views.normalize(_shared.first_image(images)), train=False,
        tokens=True)
    return pool(tokens)

  def backbone(drop_path_rate):
    model = encoder.with_drop_path(drop_path_rate)
    if eval_pool == "cls":
      return model

    def apply(params, state, x, *, train):
      tokens, state = model.apply(params, state, x, train=train, tokens=True)
      return pool(tokens), state

    return models.Model(model.init, apply)

  return Method(name="mae", init=init, loss=loss, post_update=_shared.keep,
                encode=encode, crops=_mim.one_crop(setup), backbone=backbone)

