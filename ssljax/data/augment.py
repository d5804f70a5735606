"""On-device image augmentations for self-supervised learning, in JAX.

Views are made inside the jitted train step from the raw uint8 batch:

    views(rng, images, "byol") -> (view_1, view_2)

Every random op is a pure function of one example, `op(key, image, **hp)`, on
a float image [H, W, C] with values in [0, 1] (C = 1 or 3); `batched(op)`
applies it to [B, H, W, C] with one key per example (`jax.vmap` over
`jax.random.split(key, B)`). Deterministic building blocks (`resized_crop`,
`adjust_*`, `to_grayscale`, `blur`, `normalize`) are exported too. Shapes,
dtypes and hyper-parameters are checked at trace time (`ValueError`).
Probabilities `p` are Python floats (a 0 leaves the op out of the compiled
graph) or traced scalars.

Conventions, following torchvision (the reference implementation of the
SimCLR, BYOL and DINO recipes):

* colour factors are multiplicative and results are clipped to [0, 1];
* grayscale is ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B, kept at the
  input's channel count;
* gaussian blur pads by reflection; its kernel has 2·max(1, H // 20) + 1 taps
  (about 10% of the side as in SimCLR: 23 taps at 224);
* one-channel (grayscale) images: brightness and contrast apply; saturation,
  hue and random grayscale are identities on a gray image (hue and grayscale
  are left out of the graph);
* crop boxes are continuous (no rounding) and resampled bilinearly with
  anti-aliasing (the triangle filter of PIL and `jax.image.resize`).

Normalisation defaults from the channel count: ImageNet statistics for three
channels, MNIST's (0.1307, 0.3081) for one; pass `mean`/`std` from
`ssljax.data.info(name)` to use a dataset's own.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from ssljax import _common

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale and PIL's "L".
LUMA = (0.299, 0.587, 0.114)

PRESETS = ("simclr", "byol", "multicrop", "none")


# ------------------------------------------------------------------ checks ---


def _check_image(image, fn: str) -> None:
  """A single float image [H, W, C] with C in {1, 3}."""
  _common.check_rank(image, 3, "image", fn)
  dtype = jnp.result_type(image)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{fn}: `image` must be a float image [H, W, C] with values in [0, 1],"
        f" got dtype {dtype}; convert uint8 images with `to_float`.")
  if image.shape[-1] not in (1, 3):
    raise ValueError(f"{fn}: `image` must have 1 or 3 channels [H, W, C], "
                     f"got shape {image.shape}.")


def _check_prob(p, fn: str) -> None:
  _common.check_in_range(p, 0.0, 1.0, "p", fn)


def _never(p) -> bool:
  """True for a Python 0: the op is left out of the graph."""
  return isinstance(p, numbers.Number) and p == 0


def _check_interval(interval, name: str, fn: str) -> None:
  """(a, b) with 0 < a <= b (scale, ratio and sigma ranges)."""
  if len(interval) != 2 or not 0 < interval[0] <= interval[1]:
    raise ValueError(f"{fn}: `{name}` must be a pair (a, b) with 0 < a <= b, "
                     f"got {interval}.")


# Each random op draws all its numbers with one `jax.random.uniform` call:
# every draw compiles to a full threefry hash, which dominated compile time.


def _between(u: jax.Array, interval: tuple[float, float]) -> jax.Array:
  """Maps u ~ U[0, 1) to U[a, b)."""
  return interval[0] + (interval[1] - interval[0]) * u


def _with_prob(p, u: jax.Array, transformed: jax.Array,
               image: jax.Array) -> jax.Array:
  """`transformed` where u < p, else `image` (no select for a Python 1)."""
  if isinstance(p, numbers.Number) and p >= 1:
    return transformed
  return jnp.where(u < p, transformed, image)


# --------------------------------------------------------------- float I/O ---


def to_float(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]: x / 255.

  >>> import jax.numpy as jnp
  >>> x = to_float(jnp.array([0, 51, 255], jnp.uint8))
  >>> print([round(v, 4) for v in x.tolist()])
  [0.0, 0.2, 1.0]
  """
  dtype = jnp.result_type(images)
  if dtype != jnp.uint8:
    raise ValueError(f"to_float: `images` must be uint8, got {dtype}.")
  return jnp.asarray(images, jnp.float32) / 255.0


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Default (mean, std): ImageNet's for 3 channels, MNIST's for 1.

  >>> default_stats(1)
  ((0.1307,), (0.3081,))
  """
  if channels == 3:
    return IMAGENET_MEAN, IMAGENET_STD
  if channels == 1:
    return MNIST_MEAN, MNIST_STD
  raise ValueError(
      f"default_stats: `channels` must be 1 or 3, got {channels}.")


def normalize(image: jax.Array, *, mean: Sequence[float],
              std: Sequence[float]) -> jax.Array:
  """Per-channel standardisation (x - mean_c) / std_c over the last axis.

  Works on one image or a batch; no key (it is deterministic).

  >>> import jax.numpy as jnp
  >>> print(normalize(jnp.full((1, 1, 1), 0.5), mean=(0.25,), std=(0.5,))[0, 0])
  [0.5]
  """
  channels = jnp.shape(image)[-1]
  for name, value in (("mean", mean), ("std", std)):
    if len(value) != channels:
      raise ValueError(
          f"normalize: `{name}` must have one value per channel ({channels}),"
          f" got {tuple(value)}.")
  if min(std) <= 0:
    raise ValueError(f"normalize: `std` must be > 0, got {tuple(std)}.")
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (image - mean) / std


# ----------------------------------------------------------- geometric ops ---


def crop_box(key: jax.Array, height: int, width: int, *,
             scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3),
             attempts: int = 10) -> jax.Array:
  """Samples a random-resized-crop box `[top, left, h, w]` inside the image.

  The sampler of Szegedy et al. 2015 ("Going deeper with convolutions") as in
  torchvision's RandomResizedCrop: area fraction a ~ U(scale), log-aspect
  log r ~ U(log ratio), box w = sqrt(a·H·W·r), h = sqrt(a·H·W / r); the
  first
  of `attempts` draws that fits in the image is placed uniformly at random,
  otherwise the central box of the whole image with its aspect clamped to
  `ratio`. Coordinates are continuous, so 0 <= top, top + h <= H (and the same
  for left, w) always hold.

  >>> import jax
  >>> box = crop_box(jax.random.key(0), 32, 32, scale=(1.0, 1.0),
  ...                ratio=(1.0, 1.0))
  >>> print(box.tolist())
  [0.0, 0.0, 32.0, 32.0]
  """
  fn = "crop_box"
  _check_interval(scale, "scale", fn)
  _check_interval(ratio, "ratio", fn)
  u = jax.random.uniform(key, (2 * attempts + 2,))
  area = height * width * _between(u[:attempts], scale)
  aspect = jnp.exp(_between(u[attempts:2 * attempts],
                            (math.log(ratio[0]), math.log(ratio[1]))))
  w = jnp.sqrt(area * aspect)
  h = jnp.sqrt(area / aspect)
  fits = (w <= width) & (h <= height)
  first = jnp.argmax(fits)
  # Fallback (static shapes, so computed in Python): the whole image with its
  # aspect clamped to `ratio`, centred.
  aspect_in = width / height
  if aspect_in < ratio[0]:
    fallback_h, fallback_w = width / ratio[0], width
  elif aspect_in > ratio[1]:
    fallback_h, fallback_w = height, height * ratio[1]
  else:
    fallback_h, fallback_w = height, width
  found = jnp.any(fits)
  h = jnp.where(found, h[first], fallback_h)
  w = jnp.where(found, w[first], fallback_w)
  u_top = jnp.where(found, u[-2], 0.5)
  u_left = jnp.where(found, u[-1], 0.5)
  return jnp.stack([u_top * (height - h), u_left * (width - w), h, w])


def _resample_weights(start, length, size: int, n: int) -> jax.Array:
  """[size, n] row-normalised triangle (bilinear) weights over n input pixels.

  Output pixel o is centred at c_o = start + (o + 1/2)·length/size; input
  pixel i (centre i + 1/2) weighs max(0, 1 - |i + 1/2 - c_o| / s) with
  s = max(1, length/size), so shrinking averages (anti-aliasing) instead of
  skipping pixels. Every c_o lies in [0, n], within 1/2 of a pixel centre,
  so no row sums to zero.
  """
  centres = start + (jnp.arange(size) + 0.5) * (length / size)
  width = jnp.maximum(length / size, 1.0)
  distance = jnp.abs(jnp.arange(n) + 0.5 - centres[:, None]) / width
  weights = jnp.maximum(0.0, 1.0 - distance)
  return weights / jnp.sum(weights, axis=1, keepdims=True)


def resized_crop(image: jax.Array, box: jax.Array, size: int) -> jax.Array:
  """Resamples the box `[top, left, h, w]` of `image` to size×size.

  Bilinear, anti-aliased when shrinking (the triangle filter of PIL and
  `jax.image.scale_and_translate`), as two small matrix products
  W_rows · image · W_colsᵀ with weights from `_resample_weights`.

  >>> import jax.numpy as jnp
  >>> x = jnp.arange(16.0).reshape(4, 4, 1)
  >>> print(resized_crop(x, jnp.array([1.0, 1.0, 2.0, 2.0]), 2)[..., 0])
  [[ 5.  6.]
   [ 9. 10.]]
  """
  _check_image(image, "resized_crop")
  _common.check_positive(size, "size", "resized_crop")
  rows = _resample_weights(box[0], box[2], size, image.shape[0])
  cols = _resample_weights(box[1], box[3], size, image.shape[1])
  return jnp.einsum("oh,hwc,pw->opc", rows, image.astype(rows.dtype), cols)


def random_resized_crop(key: jax.Array, image: jax.Array, *, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)
                        ) -> jax.Array:
  """A random box from `crop_box` resampled to size×size (see `resized_crop`).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.zeros((32, 32, 3))
  >>> print(random_resized_crop(jax.random.key(0), x, size=16).shape)
  (16, 16, 3)
  """
  _check_image(image, "random_resized_crop")
  box = crop_box(key, image.shape[0], image.shape[1], scale=scale, ratio=ratio)
  return resized_crop(image, box, size)


def flip(key: jax.Array, image: jax.Array, *, p: float = 0.5) -> jax.Array:
  """Horizontal flip x[:, ::-1] with probability p.

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.arange(3.0).reshape(1, 3, 1)
  >>> print(flip(jax.random.key(0), x, p=1.0)[0, :, 0])
  [2. 1. 0.]
  """
  _check_image(image, "flip")
  _check_prob(p, "flip")
  if _never(p):
    return image
  return _with_prob(p, jax.random.uniform(key), image[:, ::-1], image)


# ------------------------------------------------------------- colour ops ---


def to_grayscale(image: jax.Array) -> jax.Array:
  """Luma 0.299 R + 0.587 G + 0.114 B, repeated on every channel.

  A one-channel image is returned unchanged.

  >>> import jax.numpy as jnp
  >>> print(to_grayscale(jnp.array([[[1.0, 0.0, 0.0]]]))[0, 0])
  [0.299 0.299 0.299]
  """
  _check_image(image, "to_grayscale")
  if image.shape[-1] == 1:
    return image
  luma = image @ jnp.asarray(LUMA, image.dtype)
  return jnp.repeat(luma[..., None], 3, axis=-1)


def _blend(image: jax.Array, other: jax.Array, factor) -> jax.Array:
  """factor·image + (1 - factor)·other, clipped to [0, 1]."""
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image: jax.Array, factor) -> jax.Array:
  """clip(factor · x, 0, 1).

  >>> import jax.numpy as jnp
  >>> print(adjust_brightness(jnp.full((1, 1, 1), 0.4), 2.0)[0, 0])
  [0.8]
  """
  _check_image(image, "adjust_brightness")
  return _blend(image, jnp.zeros_like(image), factor)


def adjust_contrast(image: jax.Array, factor) -> jax.Array:
  """Blend towards the mean luma m: clip(factor·x + (1 - factor)·m, 0, 1).

  >>> import jax.numpy as jnp
  >>> x = jnp.array([0.2, 0.6]).reshape(1, 2, 1)
  >>> print(adjust_contrast(x, 0.5)[0, :, 0])
  [0.3 0.5]
  """
  _check_image(image, "adjust_contrast")
  mean = jnp.mean(to_grayscale(image)[..., 0])
  return _blend(image, mean, factor)


def adjust_saturation(image: jax.Array, factor) -> jax.Array:
  """Blend towards gray: clip(factor·x + (1 - factor)·gray(x), 0, 1).

  >>> import jax.numpy as jnp
  >>> x = jnp.array([[[1.0, 0.0, 0.0]]])
  >>> print(adjust_saturation(x, 0.0)[0, 0])
  [0.299 0.299 0.299]
  """
  _check_image(image, "adjust_saturation")
  return _blend(image, to_grayscale(image), factor)


def _rgb_to_hsv(image: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  delta = value - jnp.min(image, axis=-1)
  # Gray pixels (delta = 0) have hue and saturation 0; the safe denominators
  # keep the unused branches finite.
  safe_delta = jnp.where(delta > 0, delta, 1.0)
  saturation = jnp.where(value > 0, delta / jnp.where(value > 0, value, 1.0),
                         0.0)
  rc, gc, bc = ((value - c) / safe_delta for c in (r, g, b))
  hue = jnp.where(r == value, bc - gc,
                  jnp.where(g == value, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = jnp.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
  return hue, saturation, value


def _hsv_to_rgb(hue: jax.Array, saturation: jax.Array,
                value: jax.Array) -> jax.Array:
  """Channel n of (r, g, b) = (5, 3, 1): v - v·s·clip(min(k, 4 - k), 0, 1)
  with k = (n + 6h) mod 6 (the closed form of the six-sector table)."""
  n = jnp.asarray([5.0, 3.0, 1.0], hue.dtype)
  k = (n + 6.0 * hue[..., None]) % 6.0
  ramp = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return value[..., None] * (1.0 - saturation[..., None] * ramp)


def adjust_hue(image: jax.Array, delta) -> jax.Array:
  """Rotates the hue: HSV h -> (h + delta) mod 1, with delta in [-0.5, 0.5].

  A one-channel image is returned unchanged (gray has no hue).

  >>> import jax.numpy as jnp
  >>> print(adjust_hue(jnp.array([[[1.0, 0.0, 0.0]]]), 1 / 3)[0, 0])
  [0. 1. 0.]
  """
  _check_image(image, "adjust_hue")
  if image.shape[-1] == 1:
    return image
  hue, saturation, value = _rgb_to_hsv(image)
  return _hsv_to_rgb((hue + delta) % 1.0, saturation, value)


def adjust_color(image: jax.Array, amounts: jax.Array, order: jax.Array, *,
                 with_hue: bool = True) -> jax.Array:
  """Brightness, contrast, saturation and hue adjustments in a given order.

  `amounts` = [brightness factor, contrast factor, saturation factor, hue
  shift] and `order` a permutation of [0, 1, 2, 3] naming them in the order
  applied (both may be traced). Equal to chaining `adjust_brightness`,
  `adjust_contrast`, `adjust_saturation` and `adjust_hue` in that order, but
  the hue conversion, by far the dearest, runs once: the three blends before
  it in `order` run in a first loop, those after it in a second.
  `with_hue=False` leaves the hue shift out (gray images, zero strength).

  >>> import jax.numpy as jnp
  >>> x = jnp.array([[[0.8, 0.2, 0.2]]])
  >>> amounts, order = jnp.array([1.5, 1.0, 1.0, 0.0]), jnp.arange(4)
  >>> y = adjust_color(x, amounts, order)
  >>> print([round(v, 4) for v in y[0, 0].tolist()])
  [1.0, 0.3, 0.3]
  """
  _check_image(image, "adjust_color")
  amounts = jnp.asarray(amounts)
  order = jnp.asarray(order)
  hue_position = jnp.argmax(order == 3)

  def blend(step, x):
    """Blend adjustment order[step] (the hue slot is the identity)."""
    op = order[step]
    gray = to_grayscale(x)
    target = jnp.where(op == 0, 0.0,
                       jnp.where(op == 1, jnp.mean(gray[..., 0]), gray))
    factor = jnp.where(op == 3, 1.0, amounts[jnp.minimum(op, 2)])
    return _blend(x, target, factor)

  def blends(keep):
    return lambda step, x: jnp.where(keep(step), blend(step, x), x)

  image = jax.lax.fori_loop(0, 4, blends(lambda s: s < hue_position), image)
  if with_hue:
    image = adjust_hue(image, amounts[3])
  return jax.lax.fori_loop(0, 4, blends(lambda s: s > hue_position), image)


def color_jitter(key: jax.Array, image: jax.Array, *, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.2,
                 hue: float = 0.1, p: float = 0.8) -> jax.Array:
  """torchvision's ColorJitter, applied with probability p.

  Factors b ~ U[max(0, 1 - brightness), 1 + brightness] (same for contrast
  and saturation) and hue shift ~ U[-hue, hue]; the four adjustments run in a
  uniformly random order (Chen et al. 2020, SimCLR, Appendix A), through
  `adjust_color`. The hue shift is left out at trace time when its strength
  is 0 or the image has one channel (gray has no hue; saturation is then the
  identity too).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.full((4, 4, 3), 0.5)
  >>> y = color_jitter(jax.random.key(0), x, p=0.0)
  >>> print(bool((y == x).all()))
  True
  """
  fn = "color_jitter"
  _check_image(image, fn)
  _check_prob(p, fn)
  for name, value in (("brightness", brightness), ("contrast", contrast),
                      ("saturation", saturation)):
    _common.check_non_negative(value, name, fn)
  _common.check_in_range(hue, 0.0, 0.5, "hue", fn)
  if _never(p) or brightness == contrast == saturation == hue == 0:
    return image
  u = jax.random.uniform(key, (9,))
  factor_ranges = [(max(0.0, 1.0 - s), 1.0 + s)
                   for s in (brightness, contrast, saturation)]
  factors = [_between(u[1 + i], r) for i, r in enumerate(factor_ranges)]
  amounts = jnp.stack(factors + [_between(u[4], (-hue, hue))])
  # The ranks of i.i.d. uniforms are a uniformly random permutation.
  order = jnp.argsort(u[5:])
  jittered = adjust_color(image, amounts, order,
                          with_hue=hue > 0 and image.shape[-1] == 3)
  return _with_prob(p, u[0], jittered, image)


def grayscale(key: jax.Array, image: jax.Array, *, p: float = 0.2) -> jax.Array:
  """`to_grayscale` with probability p (identity on one-channel images).

  >>> import jax, jax.numpy as jnp
  >>> y = grayscale(jax.random.key(0), jnp.array([[[1.0, 0.0, 0.0]]]), p=1.0)
  >>> print(y[0, 0])
  [0.299 0.299 0.299]
  """
  _check_image(image, "grayscale")
  _check_prob(p, "grayscale")
  if _never(p) or image.shape[-1] == 1:
    return image
  return _with_prob(p, jax.random.uniform(key), to_grayscale(image), image)


def blur_radius(size: int) -> int:
  """Gaussian-blur kernel radius for a side of `size`: max(1, size // 20).

  2·radius + 1 taps is about 10% of the side, SimCLR's choice (23 at 224).

  >>> blur_radius(224), blur_radius(32)
  (11, 1)
  """
  return max(1, size // 20)


def blur(image: jax.Array, sigma, *, radius: int | None = None) -> jax.Array:
  """Separable gaussian blur, weights ∝ exp(-t² / 2σ²) for |t| <= radius.

  Borders are padded by reflection (as torchvision); `radius` defaults to
  `blur_radius(H)`. `sigma` may be traced (one per example under vmap).

  >>> import jax.numpy as jnp
  >>> x = jnp.full((8, 8, 1), 0.5)
  >>> print(float(blur(x, 1.0)[3, 3, 0]))
  0.5
  """
  _check_image(image, "blur")
  _common.check_positive(sigma, "sigma", "blur")
  radius = blur_radius(image.shape[0]) if radius is None else radius
  if radius >= min(image.shape[:2]):
    raise ValueError(f"blur: `radius` must be smaller than the image side, "
                     f"got {radius} for shape {image.shape}.")
  taps = jnp.arange(-radius, radius + 1, dtype=image.dtype)
  weights = jnp.exp(-jnp.square(taps) / (2.0 * jnp.square(sigma)))
  weights = weights / jnp.sum(weights)
  for axis in (0, 1):
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    padded = jnp.pad(image, pad, mode="reflect")
    length = image.shape[axis]
    image = sum(weights[t] * jax.lax.slice_in_dim(padded, t, t + length,
                                                  axis=axis)
                for t in range(2 * radius + 1))
  return image


def gaussian_blur(key: jax.Array, image: jax.Array, *, p: float = 0.5,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> jax.Array:
  """`blur` with σ ~ U(sigma), applied with probability p (SimCLR, BYOL, DINO).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.full((8, 8, 3), 0.25)
  >>> print(bool(jnp.allclose(gaussian_blur(jax.random.key(0), x, p=1.0), x)))
  True
  """
  fn = "gaussian_blur"
  _check_image(image, fn)
  _check_prob(p, fn)
  _check_interval(sigma, "sigma", fn)
  if _never(p):
    return image
  u = jax.random.uniform(key, (2,))
  return _with_prob(p, u[0], blur(image, _between(u[1], sigma)), image)


def solarize(key: jax.Array, image: jax.Array, *, p: float = 0.2,
             threshold: float = 0.5) -> jax.Array:
  """Pixels >= threshold become 1 - x, with probability p (BYOL Table 6).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.array([0.2, 0.7]).reshape(1, 2, 1)
  >>> print(solarize(jax.random.key(0), x, p=1.0)[0, :, 0])
  [0.2 0.3]
  """
  _check_image(image, "solarize")
  _check_prob(p, "solarize")
  if _never(p):
    return image
  solarized = jnp.where(image < threshold, image, 1.0 - image)
  return _with_prob(p, jax.random.uniform(key), solarized, image)


def batched(op: Callable) -> Callable:
  """Lifts a per-example `op(key, image, **hp)` to a batch [B, H, W, C].

  Example b gets key `jax.random.split(key, B)[b]`.

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.zeros((2, 8, 8, 3))
  >>> print(batched(random_resized_crop)(jax.random.key(0), x, size=4).shape)
  (2, 4, 4, 3)
  """

  name = getattr(op, "__name__", "op")

  def apply(key: jax.Array, images: jax.Array, **hyper_parameters):
    _common.check_rank(images, 4, "images", f"batched({name})")
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(functools.partial(op, **hyper_parameters))(keys, images)

  apply.__name__ = f"batched_{name}"
  apply.__doc__ = f"`{name}` on a batch with one key per example."
  return apply


# ------------------------------------------------------------------ views ---


class ViewSpec(NamedTuple):
  """One view's recipe: crop, flip, jitter, grayscale, blur, solarize.

  Defaults are BYOL's (Grill et al. 2020, Table 6) apart from the
  per-view blur/solarize probabilities, which presets set.
  """
  size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_prob: float = 0.5
  jitter_prob: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  grayscale_prob: float = 0.2
  blur_prob: float = 0.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  solarize_prob: float = 0.0


def view(key: jax.Array, image: jax.Array, spec: ViewSpec, *,
         cropped: bool = False) -> jax.Array:
  """One augmented view of a float image in [0, 1] (not normalised).

  With `cropped`, `image` is already the view's crop (cut on the host from
  a full-resolution picture): the crop is skipped, the rest applies.

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.full((32, 32, 3), 0.5)
  >>> print(view(jax.random.key(0), x, ViewSpec(size=16)).shape)
  (16, 16, 3)
  """
  keys = jax.random.split(key, 6)
  if not cropped:
    image = random_resized_crop(keys[0], image, size=spec.size,
                                scale=spec.scale, ratio=spec.ratio)
  image = flip(keys[1], image, p=spec.flip_prob)
  image = color_jitter(keys[2], image, brightness=spec.brightness,
                       contrast=spec.contrast, saturation=spec.saturation,
                       hue=spec.hue, p=spec.jitter_prob)
  image = grayscale(keys[3], image, p=spec.grayscale_prob)
  image = gaussian_blur(keys[4], image, p=spec.blur_prob,
                        sigma=spec.blur_sigma)
  return solarize(keys[5], image, p=spec.solarize_prob)


def multicrop_sizes(image_size: int) -> tuple[int, int]:
  """(global, local) crop sides for an input side: (S, 4·ceil(3S / 28)).

  The local side is DINO's 96/224 = 3/7 of the global one, rounded up to a
  multiple of 4 so that ViT patches of 4 (small images) tile it:
  224 -> 96, 32 -> 16, 28 -> 12, 96 -> 44.

  >>> multicrop_sizes(224), multicrop_sizes(32), multicrop_sizes(28)
  ((224, 96), (32, 16), (28, 12))
  """
  return image_size, 4 * (-(-3 * image_size // 28))


def preset(name: str, *, image_size: int, **overrides) -> tuple[ViewSpec, ...]:
  """The view recipes of a preset for square inputs of side `image_size`.

  * "simclr" (Chen et al. 2020, App. A): 2 views, crop scale (0.08, 1),
    jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale 0.2, blur p 0.5.
  * "byol" (Grill et al. 2020, Table 6): 2 views, jitter (0.4, 0.4, 0.2, 0.1)
    with p 0.8, grayscale 0.2, blur p 1.0 / 0.1, solarize p 0 / 0.2.
  * "multicrop" (Caron et al. 2021, DINO): 2 global views (crop scale
    (0.4, 1), BYOL's asymmetric blur/solarize) and `num_local` = 8 local ones
    (scale (0.05, 0.4), blur p 0.5), sides from `multicrop_sizes`.
  * "none": no view recipe (`views` then only normalises).

  Overrides: any `ViewSpec` field, applied to every view (e.g. `size=`,
  `blur_prob=0.0` as the papers do on CIFAR); "multicrop" takes `num_local`,
  `global_size`, `local_size`, `global_scale`, `local_scale` instead of
  `size`/`scale`.

  >>> [s.size for s in preset("multicrop", image_size=32, num_local=2)]
  [32, 32, 16, 16]
  """
  fn = "preset"
  if name not in PRESETS:
    raise ValueError(f"{fn}: unknown `preset` {name!r}; expected one of "
                     f"{PRESETS}.")
  if name == "multicrop":
    global_size, local_size = multicrop_sizes(image_size)
    groups = dict(num_local=8, global_size=global_size, local_size=local_size,
                  global_scale=(0.4, 1.0), local_scale=(0.05, 0.4))
    shared = tuple(f for f in ViewSpec._fields if f not in ("size", "scale"))
  else:
    groups = {}
    shared = () if name == "none" else ViewSpec._fields
  _common.check_positive(image_size, "image_size", fn)
  unknown = sorted(set(overrides) - set(groups) - set(shared))
  if unknown:
    raise ValueError(f"{fn}: unknown override(s) {unknown} for preset "
                     f"{name!r}; valid: {sorted(groups) + list(shared)}.")
  groups.update({k: v for k, v in overrides.items() if k in groups})
  if name == "multicrop" and not (isinstance(groups["num_local"], int)
                                  and groups["num_local"] >= 0):
    raise ValueError(f"{fn}: `num_local` must be an int >= 0, got "
                     f"{groups['num_local']}.")
  common = {k: v for k, v in overrides.items() if k in shared}

  if name == "none":
    return ()
  if name == "simclr":
    base = ViewSpec(size=image_size, brightness=0.8, contrast=0.8,
                    saturation=0.8, hue=0.2, blur_prob=0.5)
    specs = (base, base)
  elif name == "byol":
    base = ViewSpec(size=image_size)
    specs = (base._replace(blur_prob=1.0),
             base._replace(blur_prob=0.1, solarize_prob=0.2))
  else:
    big = ViewSpec(size=groups["global_size"], scale=groups["global_scale"])
    small = ViewSpec(size=groups["local_size"], scale=groups["local_scale"],
                     blur_prob=0.5)
    specs = ((big._replace(blur_prob=1.0),
              big._replace(blur_prob=0.1, solarize_prob=0.2))
             + (small,) * groups["num_local"])
  return tuple(s._replace(**common) for s in specs)


def _check_batch(images, fn: str) -> None:
  _common.check_rank(images, 4, "images", fn)
  dtype = jnp.result_type(images)
  if dtype != jnp.uint8:
    raise ValueError(f"{fn}: `images` must be the raw uint8 batch "
                     f"[B, H, W, C], got dtype {dtype}.")
  if images.shape[-1] not in (1, 3):
    raise ValueError(f"{fn}: `images` must have 1 or 3 channels "
                     f"[B, H, W, C], got shape {images.shape}.")


def views(rng: jax.Array, images: jax.Array | Sequence[jax.Array],
          preset_or_specs: str | Sequence[ViewSpec] = "simclr", *,
          mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None, precropped: bool = False,
          standardize: bool = True, **overrides) -> tuple[jax.Array, ...]:
  """Normalised float32 views of a raw uint8 batch [B, H, W, C] (C = 1 or 3).

  `preset_or_specs` is a preset name (see `preset`; "simclr"/"byol" give 2
  views at the input side, "multicrop" 2 global + `num_local` local views,
  "none" the single normalised batch) or a sequence of `ViewSpec`. View v of
  example b uses key `split(fold_in(rng, v), B)[b]`, so the result does not
  depend on how the batch is sharded. `mean`/`std` default to
  `default_stats(C)`; with `standardize=False` the views stay in [0, 1].
  Meant to run inside the jitted train step (eagerly, every primitive is
  dispatched on its own).

  With `precropped`, `images` is a sequence of uint8 batches, one per view
  and of that view's `size`, already cropped (and resized) on the host from
  variable-size pictures (`ssljax.data.load(..., crops=specs)`): the views
  then skip the crop and make the flips and colour operations, with the same
  keys as above.

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> make = jax.jit(lambda rng, x: views(rng, x, "byol"))
  >>> v1, v2 = make(jax.random.key(0), x)
  >>> print(v1.shape, v1.dtype)
  (4, 16, 16, 3) float32
  """
  fn = "views"
  crops = tuple(images) if precropped else None
  for batch in crops or (images,):
    _check_batch(batch, fn)
  reference = crops[0] if precropped else images
  channels = reference.shape[-1]
  if (mean is None) != (std is None):
    raise ValueError(f"{fn}: give both `mean` and `std` or neither.")
  if mean is None:
    mean, std = default_stats(channels)
  scale = ((lambda x: normalize(x, mean=mean, std=std)) if standardize
           else (lambda x: x))
  if isinstance(preset_or_specs, str):
    specs = preset(preset_or_specs, image_size=min(reference.shape[1:3]),
                   **overrides)
    if preset_or_specs == "none" and not precropped:
      return (scale(to_float(images)),)
  else:
    if overrides:
      raise ValueError(f"{fn}: overrides {sorted(overrides)} apply to preset "
                       "names only; set them in the `ViewSpec`s.")
    specs = tuple(preset_or_specs)
  if precropped:
    _check_crops(crops, specs, fn)
  out = [None] * len(specs)
  for indices, spec, probs in _group(specs):
    keys = jnp.stack([jax.random.split(jax.random.fold_in(rng, index),
                                       reference.shape[0])
                      for index in indices])
    per_example = jax.vmap(functools.partial(_view_with_probs,
                                             cropped=precropped),
                           in_axes=(0, 0, None, None))
    if precropped:
      group_images = to_float(jnp.stack([crops[i] for i in indices]))
      made = jax.vmap(per_example, in_axes=(0, 0, 0, None))(
          keys, group_images, probs, spec)
    else:
      made = jax.vmap(per_example, in_axes=(0, None, 0, None))(
          keys, to_float(images), probs, spec)
    for index, one in zip(indices, made):
      out[index] = scale(one)
  return tuple(out)


def _check_crops(crops: Sequence[jax.Array], specs: Sequence[ViewSpec],
                 fn: str) -> None:
  """One host crop per view, of the view's size and the same batch size."""
  expected = [(s.size, s.size) for s in specs]
  got = [tuple(c.shape[1:3]) for c in crops]
  if got != expected or len({c.shape[0] for c in crops}) != 1:
    raise ValueError(
        f"{fn}: `images` must hold one uint8 crop batch per view, of sides "
        f"{[e[0] for e in expected]} and one batch size, got shapes "
        f"{[tuple(c.shape) for c in crops]}.")


_PROBS = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob",
          "solarize_prob")


def _group(specs: Sequence[ViewSpec]):
  """Groups views that differ at most in their probabilities.

  Each group is made in one vmap over its views, so the compiled step holds
  each crop size and jitter recipe once (BYOL's two views, DINO's two global
  views); a probability that differs within a group becomes a per-view array,
  one shared by the group stays a Python float (0 still skips the op).
  Yields (view indices, spec, {field: [V] array}).
  """
  groups: dict[ViewSpec, list[int]] = {}
  for index, spec in enumerate(specs):
    groups.setdefault(spec._replace(**dict.fromkeys(_PROBS)), []).append(index)
  for key, indices in groups.items():
    members = [specs[i] for i in indices]
    fixed, varying = {}, {}
    for field in _PROBS:
      values = [getattr(s, field) for s in members]
      if len(set(values)) == 1:
        fixed[field] = values[0]
      else:
        varying[field] = jnp.asarray(values, jnp.float32)
    yield indices, key._replace(**fixed), varying


def _view_with_probs(key: jax.Array, image: jax.Array, probs: dict,
                     spec: ViewSpec, *, cropped: bool) -> jax.Array:
  return view(key, image, spec._replace(**probs), cropped=cropped)
