"""Denoising autoencoder: reconstruct the clean image from a corrupted one.

Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing Robust
Features with Denoising Autoencoders", ICML 2008 (no official repository;
the LISA lab's Theano tutorial, lisa-lab/DeepLearningTutorials `dA.py`, is
the reference implementation).

Each image x is corrupted to x̃ ~ q_D(x̃ | x) (`ssljax.pretext.corrupt`:
the paper's masking noise, a fraction ν of the components set to 0, by
default; Gaussian or salt-and-pepper noise with `corruption`), encoded by
the backbone f and decoded by a small convolutional decoder g
(`ssljax.models.decoder`), and the squared reconstruction error against the
clean image is minimised, both in normalised pixels:

    loss = 1/(B·H·W·C) Σ (g(f(x̃)) − x)²

Defaults: masking noise of ν = 25% (the paper's range is 10-40%), and the
whole image, unflipped, as the paper trains on the images themselves
(`_pretext.WHOLE_IMAGE`). Differences from the paper
(docs/fidelity.md#denoising_autoencoder): the encoder is a convolutional
backbone and the decoder a conv net from its pooled features (the paper's
one-layer sigmoid encoder and tied decoder on pixel vectors), trained end
to end rather than layer by layer; the error is squared (the paper's
cross-entropy suits binary pixels). `encode` gives the backbone features of
clean images.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.denoising_autoencoder(backbone="tiny_cnn",
  ...                                        decoder_width=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import _common, models, pretext
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method
from ssljax.pretext import denoising


def task(rng: jax.Array, view: jax.Array, augment: Mapping, *,
         corruption: str, level: float) -> _pretext.Task:
  """(corrupted, clean) [0, 1] views, both normalised with the recipe's
  statistics."""
  noisy = pretext.corrupt(rng, view, kind=corruption, level=level)
  return _pretext.Task(_pretext.standardize(augment, noisy),
                       _pretext.standardize(augment, view))


def objective(outputs: dict, targets: jax.Array) -> tuple[jax.Array, dict]:
  """The mean squared error of the reconstruction, in float32."""
  error = _common.to_compute(outputs["reconstruction"]) - targets
  return jnp.mean(jnp.square(error)), {}


def denoising_autoencoder(*, backbone: str | models.Model = "resnet50",
                          backbone_kwargs: Mapping | None = None,
                          augment: Mapping = _pretext.light_augment(
                              **_pretext.WHOLE_IMAGE),
                          dtype: str = "float32", decoder_width: int = 64,
                          corruption: str = "masking",
                          corruption_level: float = 0.25) -> Method:
  """The denoising autoencoder (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      first view of `augment` is corrupted.
    decoder_width: channels of the decoder's feature maps.
    corruption: "masking", "gaussian" or "salt_pepper".
    corruption_level: ν, the corrupted fraction (in [0, 1]), or σ of the
      Gaussian noise (>= 0).
  """
  fn = "denoising_autoencoder"
  if corruption not in denoising.KINDS:
    raise ValueError(f"{fn}: `corruption` must be one of {denoising.KINDS}, "
                     f"got {corruption!r}.")
  if corruption == "gaussian":
    _common.check_non_negative(corruption_level, "corruption_level", fn)
  else:
    _common.check_in_range(corruption_level, 0.0, 1.0, "corruption_level",
                           fn)
  _common.check_positive(decoder_width, "decoder_width", fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)

  def make(rng, view, method_state):
    del method_state  # Nothing is kept.
    return task(rng, view, augment, corruption=corruption,
                level=corruption_level)

  return _pretext.pretext_method(
      fn, setup, _pretext.autoencoder(setup, decoder_width),
      _pretext.on_view(setup, make), objective)
