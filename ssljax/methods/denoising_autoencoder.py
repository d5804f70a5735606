"""Denoising autoencoder: reconstruct the clean image from a corrupted one.

Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing Robust
Features with Denoising Autoencoders", ICML 2008.

Each image x is corrupted to x̃ ~ q_D(x̃ | x) (`ssljax.pretext.corrupt`:
the paper's masking noise, a fraction ν of the components set to 0, by
default; Gaussian or salt-and-pepper noise with `corruption`), encoded by
the backbone f and decoded by a small convolutional decoder g
(`ssljax.models.decoder`), and the squared reconstruction error against the
clean image is minimised, both in normalised pixels:

    loss = 1/(B·H·W·C) Σ (g(f(x̃)) − x)²

Differences from the paper: the encoder is a convolutional backbone and the
decoder a conv net from its pooled features (the paper's one-layer sigmoid
encoder and tied decoder on pixel vectors), trained end to end rather than
layer by layer; the error is squared (the paper's cross-entropy suits
binary pixels); the view before corruption is a random resized crop with a
flip (`_pretext.light_augment`). `encode` gives the backbone features of
clean images.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import denoising_autoencoder
  >>> method = denoising_autoencoder.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", decoder_width=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssljax import pretext
from ssljax.methods import _pretext


def default_config() -> ml_collections.ConfigDict:
  """The denoising autoencoder's hyper-parameters: masking noise of 25%."""
  return ml_collections.ConfigDict(dict(
      name="denoising_autoencoder", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), decoder_width=64,
      corruption="masking", corruption_level=0.25))


def task(config, rng, view):
  """(corrupted, clean) normalised images and an all-ones mask: every
  pixel is reconstructed."""
  method = config.method
  noisy = pretext.corrupt(rng, view, kind=method.corruption,
                          level=method.corruption_level)
  mask = jnp.ones(view.shape[:3] + (1,), view.dtype)
  return (_pretext.normalize(config, noisy), _pretext.normalize(config, view),
          mask)


def objective(config, reconstruction, targets, mask):
  """Mean squared error (the mask is all ones)."""
  del config  # No hyper-parameter.
  return pretext.masked_l2(reconstruction, targets, mask)


METHOD = _pretext.reconstruction_method(_pretext.Reconstruction(
    name="denoising_autoencoder", task=task, objective=objective,
    default_config=default_config))
