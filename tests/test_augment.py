"""Tests for ssljax.data.augment: numpy references, properties, presets."""

import colorsys
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ssljax.data import augment as A

KEY = jax.random.key(0)
LUMA = np.array([0.299, 0.587, 0.114])


def _rand(shape, seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def over_keys(fn, keys):
  """fn(key) for every key, vmapped and jitted."""
  return jax.jit(jax.vmap(fn))(keys)


def _uint8(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --------------------------------------------- numpy references (colour) ---


def np_luma(x):
  out = np.zeros(x.shape[:2])
  for c in range(3):
    out += LUMA[c] * x[..., c]
  return out


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.7])
def test_brightness_contrast_saturation_match_numpy(factor):
  x = _rand((5, 4, 3))
  np.testing.assert_allclose(A.adjust_brightness(x, factor),
                             np.clip(factor * x, 0, 1), atol=1e-6)
  mean = np_luma(x).mean()
  np.testing.assert_allclose(A.adjust_contrast(x, factor),
                             np.clip(factor * x + (1 - factor) * mean, 0, 1),
                             atol=1e-6)
  gray = np_luma(x)[..., None]
  np.testing.assert_allclose(A.adjust_saturation(x, factor),
                             np.clip(factor * x + (1 - factor) * gray, 0, 1),
                             atol=1e-6)


def test_contrast_of_one_channel_image_blends_to_its_mean():
  x = _rand((4, 4, 1))
  np.testing.assert_allclose(A.adjust_contrast(x, 0.3),
                             np.clip(0.3 * x + 0.7 * x.mean(), 0, 1), atol=1e-6)


def np_hue(x, delta):
  out = np.zeros_like(x)
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      h, s, v = colorsys.rgb_to_hsv(*x[i, j])
      out[i, j] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
  return out


@pytest.mark.parametrize("delta", [-0.5, -0.2, 0.05, 0.31, 0.5])
def test_hue_matches_colorsys(delta):
  x = _rand((6, 5, 3), seed=1)
  x[0, 0] = 0.4  # gray pixel: no hue
  x[0, 1] = [1.0, 0.0, 0.0]
  np.testing.assert_allclose(A.adjust_hue(x, delta), np_hue(x, delta),
                             atol=1e-5)


def np_adjust_color(x, amounts, order):
  """torchvision's four adjustments, chained in `order`, from the formulas."""
  for op in order:
    f = amounts[op]
    if op == 0:
      x = np.clip(f * x, 0, 1)
    elif op == 1:
      x = np.clip(f * x + (1 - f) * np_luma(x).mean(), 0, 1)
    elif op == 2:
      x = np.clip(f * x + (1 - f) * np_luma(x)[..., None], 0, 1)
    else:
      x = np_hue(x, f)
  return x


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2),
                                   (2, 0, 3, 1), (0, 3, 2, 1)])
def test_adjust_color_matches_chained_numpy_adjustments(order):
  x = _rand((5, 4, 3), seed=8)
  amounts = (1.6, 0.5, 1.8, 0.27)  # strong enough to clip
  got = A.adjust_color(x, jnp.array(amounts), jnp.array(order))
  np.testing.assert_allclose(got, np_adjust_color(x, amounts, order),
                             atol=1e-5)
  no_hue = A.adjust_color(x, jnp.array(amounts), jnp.array(order),
                          with_hue=False)
  np.testing.assert_allclose(
      no_hue, np_adjust_color(x, amounts, [o for o in order if o != 3]),
      atol=1e-5)


def test_grayscale_matches_luma_and_channels_equal():
  x = _rand((4, 3, 3))
  y = np.asarray(A.grayscale(KEY, x, p=1.0))
  np.testing.assert_allclose(y[..., 0], np_luma(x), atol=1e-6)
  np.testing.assert_array_equal(y[..., 0], y[..., 1])
  np.testing.assert_array_equal(y[..., 0], y[..., 2])


def test_solarize_matches_numpy():
  x = _rand((4, 4, 3))
  want = np.where(x < 0.5, x, 1 - x)
  np.testing.assert_allclose(A.solarize(KEY, x, p=1.0), want)
  np.testing.assert_array_equal(A.solarize(KEY, x, p=0.0), x)


def test_normalize_matches_numpy():
  x = _rand((2, 2, 3))
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
  want = np.zeros_like(x)
  for c in range(3):
    want[..., c] = (x[..., c] - mean[c]) / std[c]
  np.testing.assert_allclose(A.normalize(x, mean=mean, std=std), want,
                             rtol=1e-6)


def np_blur(x, sigma, radius):
  """Separable gaussian blur with reflected borders, by explicit loops."""
  taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
  taps /= taps.sum()

  def reflect(i, n):
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

  h, w, c = x.shape
  rows = np.zeros_like(x, dtype=np.float64)
  for i in range(h):
    for t in range(-radius, radius + 1):
      rows[i] += taps[t + radius] * x[reflect(i + t, h)]
  out = np.zeros_like(rows)
  for j in range(w):
    for t in range(-radius, radius + 1):
      out[:, j] += taps[t + radius] * rows[:, reflect(j + t, w)]
  return out


@pytest.mark.parametrize("sigma,radius", [(0.5, 1), (1.3, 2), (2.0, 3)])
def test_blur_matches_numpy(sigma, radius):
  x = _rand((7, 6, 3), seed=2)
  np.testing.assert_allclose(A.blur(x, sigma, radius=radius),
                             np_blur(x, sigma, radius), atol=1e-6)


def test_blur_default_radius_is_ten_percent_of_the_side():
  assert [A.blur_radius(s) for s in (224, 96, 32, 28, 12)] == [11, 4, 1, 1, 1]


# ------------------------------------------------------- geometric ops ---


def np_bilinear(x, box, size):
  """Bilinear sampling at half-pixel centres (no edge effects inside)."""
  top, left, h, w = box
  out = np.zeros((size, size, x.shape[2]))
  for i in range(size):
    for j in range(size):
      y = top + (i + 0.5) * h / size - 0.5
      z = left + (j + 0.5) * w / size - 0.5
      y0, z0 = int(np.floor(y)), int(np.floor(z))
      fy, fz = y - y0, z - z0
      out[i, j] = ((1 - fy) * (1 - fz) * x[y0, z0]
                   + fy * (1 - fz) * x[y0 + 1, z0]
                   + (1 - fy) * fz * x[y0, z0 + 1]
                   + fy * fz * x[y0 + 1, z0 + 1])
  return out


def test_resized_crop_upsampling_matches_bilinear():
  x = _rand((12, 12, 3), seed=3)
  box = (2.5, 3.25, 5.0, 4.0)  # enlarged to 9x9: no anti-aliasing involved
  np.testing.assert_allclose(A.resized_crop(x, jnp.array(box), 9),
                             np_bilinear(x, box, 9), atol=1e-5)


@pytest.mark.parametrize("box,size", [((1.3, 2.2, 9.5, 7.1), 4),
                                      ((0.0, 0.0, 12.0, 10.0), 5),
                                      ((3.0, 1.0, 4.0, 6.0), 11)])
def test_resized_crop_matches_jax_image_scale_and_translate(box, size):
  x = _rand((12, 10, 3), seed=4)
  top, left, h, w = box
  want = jax.image.scale_and_translate(
      x, (size, size, 3), (0, 1), jnp.array([size / h, size / w]),
      jnp.array([-top * size / h, -left * size / w]), method="linear",
      antialias=True)
  np.testing.assert_allclose(A.resized_crop(x, jnp.array(box), size), want,
                             atol=1e-5)


def test_full_box_is_identity_and_constant_stays_constant():
  x = _rand((8, 8, 3))
  np.testing.assert_allclose(A.resized_crop(x, jnp.array([0., 0., 8., 8.]), 8),
                             x, atol=1e-6)
  c = np.full((9, 7, 1), 0.3, np.float32)
  y = A.random_resized_crop(KEY, c, size=5)
  np.testing.assert_allclose(y, 0.3, atol=1e-6)


@pytest.mark.parametrize("height,width", [(32, 32), (8, 64), (64, 6)])
def test_crop_boxes_inside_image_with_scale_and_ratio(height, width):
  keys = jax.random.split(KEY, 2000)
  scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
  boxes = np.asarray(over_keys(functools.partial(
      A.crop_box, height=height, width=width, scale=scale, ratio=ratio), keys))
  top, left, h, w = boxes.T
  eps = 1e-4
  assert (top >= -eps).all() and (left >= -eps).all()
  assert (top + h <= height + eps).all() and (left + w <= width + eps).all()
  # A box is an accepted draw (area fraction in `scale`, aspect in `ratio`)
  # or torchvision's fallback: the centred whole image, aspect clamped.
  fh, fw = height, width
  if width / height < ratio[0]:
    fh = width / ratio[0]
  elif width / height > ratio[1]:
    fw = height * ratio[1]
  fallback = (np.isclose(h, fh) & np.isclose(w, fw)
              & np.isclose(top, (height - fh) / 2)
              & np.isclose(left, (width - fw) / 2))
  area = h * w / (height * width)
  accepted = ((area >= scale[0] - eps) & (area <= scale[1] + eps)
              & (w / h >= ratio[0] - eps) & (w / h <= ratio[1] + eps))
  assert (accepted | fallback).all()
  assert accepted.mean() > 0.5


def test_crop_box_on_very_elongated_image_falls_back_to_center():
  box = np.asarray(A.crop_box(KEY, 4, 100, scale=(0.9, 1.0)))
  np.testing.assert_allclose(box, [0.0, (100 - 4 * 4 / 3) / 2, 4.0, 4 * 4 / 3],
                             rtol=1e-6)


def test_flip_twice_is_identity_and_matches_numpy():
  x = _rand((4, 5, 3))
  once = A.flip(KEY, x, p=1.0)
  np.testing.assert_array_equal(once, x[:, ::-1])
  np.testing.assert_array_equal(A.flip(KEY, once, p=1.0), x)
  np.testing.assert_array_equal(A.flip(KEY, x, p=0.0), x)


# ------------------------------------------------------- random ops ---


def test_probabilities_are_respected():
  x = jnp.asarray(_rand((4, 4, 3)))
  keys = jax.random.split(KEY, 4000)
  flipped = over_keys(lambda k: A.flip(k, x, p=0.3), keys)
  rate = float(jnp.mean(jnp.all(flipped == x[:, ::-1], axis=(1, 2, 3))))
  assert abs(rate - 0.3) < 0.03
  grayed = over_keys(lambda k: A.grayscale(k, x, p=0.2), keys)
  rate = float(jnp.mean(jnp.all(grayed[..., 0] == grayed[..., 1], axis=(1, 2))))
  assert abs(rate - 0.2) < 0.03


def test_jitter_brightness_factor_range():
  x = jnp.full((2, 2, 3), 0.25)
  keys = jax.random.split(KEY, 2000)
  y = over_keys(lambda k: A.color_jitter(k, x, brightness=0.5, contrast=0.0,
                                         saturation=0.0, hue=0.0, p=1.0), keys)
  factors = np.asarray(y[:, 0, 0, 0]) / 0.25
  assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6
  assert factors.min() < 0.55 and factors.max() > 1.45  # spans the range
  np.testing.assert_allclose(y, factors[:, None, None, None] * x[None],
                             rtol=1e-5)


def test_jitter_outputs_stay_in_range_and_differ_per_key():
  x = jnp.asarray(_rand((4, 4, 3)))
  keys = jax.random.split(KEY, 64)
  y = over_keys(lambda k: A.color_jitter(k, x, brightness=0.8, contrast=0.8,
                                         saturation=0.8, hue=0.2, p=1.0), keys)
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
  assert len({tuple(np.asarray(v).ravel().round(5)) for v in y}) == 64


def test_gray_inputs_skip_colour_only_ops():
  x = jnp.asarray(_rand((6, 6, 1)))
  np.testing.assert_allclose(
      A.color_jitter(KEY, x, brightness=0.0, contrast=0.0, saturation=0.8,
                     hue=0.4, p=1.0), x, atol=1e-6)
  np.testing.assert_array_equal(A.grayscale(KEY, x, p=1.0), x)
  np.testing.assert_array_equal(A.adjust_hue(x, 0.3), x)
  y = A.color_jitter(KEY, x, brightness=0.8, contrast=0.0, saturation=0.0,
                     hue=0.0, p=1.0)
  darkest = np.unravel_index(np.argmin(x), x.shape)  # never clipped
  factor = float(y[darkest] / x[darkest])
  np.testing.assert_allclose(y, np.clip(factor * x, 0, 1), rtol=1e-5)


def test_gaussian_blur_sigma_within_range():
  x = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
  keys = jax.random.split(KEY, 200)
  centre = over_keys(lambda k: A.gaussian_blur(k, x, p=1.0, sigma=(0.5, 1.5)),
                     keys)[:, 4, 4, 0]
  radius = A.blur_radius(9)
  low = np_blur(np.asarray(x), 1.5, radius)[4, 4, 0]   # wider blur, lower peak
  high = np_blur(np.asarray(x), 0.5, radius)[4, 4, 0]
  assert float(centre.min()) >= low - 1e-6
  assert float(centre.max()) <= high + 1e-6


def test_batched_uses_one_key_per_example():
  x = jnp.asarray(_rand((3, 8, 8, 3)))
  got = A.batched(A.random_resized_crop)(KEY, x, size=4)
  keys = jax.random.split(KEY, 3)
  for b in range(3):
    want = A.random_resized_crop(keys[b], x[b], size=4)
    np.testing.assert_allclose(got[b], want, atol=1e-6)


# ---------------------------------------------------------------- views ---

IMAGES = _uint8((4, 16, 16, 3))
simclr_jit = jax.jit(lambda rng, x: A.views(rng, x, "simclr"))


def test_views_same_key_same_views_different_keys_differ_and_range():
  a = simclr_jit(KEY, IMAGES)
  b = simclr_jit(KEY, IMAGES)
  c = simclr_jit(jax.random.key(1), IMAGES)
  assert len(a) == 2 and a[0].shape == (4, 16, 16, 3)
  assert a[0].dtype == jnp.float32
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.allclose(a[0], c[0])
  assert not np.allclose(a[0], a[1])                   # two different views
  mean, std = np.array(A.IMAGENET_MEAN), np.array(A.IMAGENET_STD)
  for v in a:  # normalised images of [0, 1] values
    raw = np.asarray(v) * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_view_output_range_on_extreme_images():
  spec = A.ViewSpec(size=8, blur_prob=1.0, solarize_prob=1.0, brightness=0.9,
                    contrast=0.9, saturation=0.9, hue=0.5)
  one_view = jax.jit(A.view, static_argnums=2)
  for fill in (0.0, 1.0):
    y = one_view(KEY, jnp.full((12, 12, 3), fill), spec)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_none_preset_only_normalises():
  x = _uint8((2, 8, 8, 1), seed=5)
  (out,) = A.views(KEY, x, "none")
  np.testing.assert_allclose(out, (x / 255.0 - 0.1307) / 0.3081, rtol=1e-5,
                             atol=1e-6)


# Cheap recipe (no colour jitter) for the tests that only need a random view.
LIGHT = (A.ViewSpec(size=6, jitter_prob=0.0, grayscale_prob=0.5,
                    blur_prob=0.5, solarize_prob=0.5),)
light_jit = jax.jit(lambda rng, x: A.views(rng, x, LIGHT))


def test_views_keys_and_grouping_match_per_view_reference():
  # Two recipes that differ only in probabilities are made in one vmap with
  # per-view probability arrays; each must equal its own static-probability
  # `view` with key split(fold_in(rng, v), B)[b].
  specs = (LIGHT[0]._replace(blur_prob=1.0, solarize_prob=0.0),
           LIGHT[0]._replace(blur_prob=0.0, solarize_prob=1.0))
  x = _uint8((3, 8, 8, 3), seed=5)
  got = jax.jit(lambda rng, x: A.views(rng, x, specs))(KEY, x)
  one_view = jax.jit(A.view, static_argnums=2)
  for v, spec in enumerate(specs):
    keys = jax.random.split(jax.random.fold_in(KEY, v), 3)
    for b in range(3):
      want = A.normalize(one_view(keys[b], A.to_float(x[b]), spec),
                         mean=A.IMAGENET_MEAN, std=A.IMAGENET_STD)
      np.testing.assert_allclose(got[v][b], want, atol=1e-5)


def test_views_global_view_over_sharded_batch():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  x = _uint8((8, 8, 8, 3), seed=6)
  sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(light_jit(KEY, sharded)[0], light_jit(KEY, x)[0],
                             atol=1e-5)


def test_presets_follow_the_papers():
  simclr = A.preset("simclr", image_size=32)
  assert len(simclr) == 2 and simclr[0] == simclr[1]
  first = simclr[0]
  assert (first.brightness, first.hue, first.blur_prob) == (0.8, 0.2, 0.5)
  v1, v2 = A.preset("byol", image_size=32)
  assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (
      1.0, 0.0, 0.1, 0.2)
  assert A.preset("simclr", image_size=32, size=24)[1].size == 24
  assert A.preset("byol", image_size=32, blur_prob=0.0)[0].blur_prob == 0.0
  for side, local in ((224, 96), (32, 16), (28, 12), (96, 44)):
    specs = A.preset("multicrop", image_size=side)
    assert [s.size for s in specs] == [side] * 2 + [local] * 8
    assert specs[0].scale == (0.4, 1.0) and specs[2].scale == (0.05, 0.4)
    assert (specs[0].blur_prob, specs[1].solarize_prob, specs[2].blur_prob) == (
        1.0, 0.2, 0.5)
  assert len(A.preset("multicrop", image_size=32, num_local=0)) == 2
  assert A.preset("none", image_size=32) == ()


def test_multicrop_views_on_gray_images():
  x = _uint8((2, 28, 28, 1), seed=7)
  out = jax.jit(lambda k, x: A.views(k, x, "multicrop", num_local=2))(KEY, x)
  assert [v.shape for v in out] == [(2, 28, 28, 1)] * 2 + [(2, 12, 12, 1)] * 2
  assert not np.allclose(out[2], out[3])  # local crops draw their own keys


# ----------------------------------------------------------- bad inputs ---


@pytest.mark.parametrize("images,match", [
    (np.zeros((4, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 3), np.uint8), "rank 4"),
    (np.zeros((4, 8, 8, 2), np.uint8), "channels"),
])
def test_views_rejects_bad_batches(images, match):
  with pytest.raises(ValueError, match=match):
    A.views(KEY, images, "simclr")
  with pytest.raises(ValueError, match="images"):
    jax.jit(lambda k, x: A.views(k, x, "byol"))(KEY, images)


def test_bad_arguments_raise_value_error():
  x = _uint8((2, 8, 8, 3))
  f = _rand((8, 8, 3))
  cases = [
      (lambda: A.views(KEY, x, "moco"), "preset"),
      (lambda: A.views(KEY, x, "simclr", num_local=2), "num_local"),
      (lambda: A.views(KEY, x, "multicrop", size=4), "size"),
      (lambda: A.views(KEY, x, (A.ViewSpec(size=4),), size=4), "overrides"),
      (lambda: A.views(KEY, x, "none", mean=(0.5,), std=(0.5,)), "mean"),
      (lambda: A.views(KEY, x, "none", mean=(0.5, 0.5, 0.5)), "std"),
      (lambda: A.flip(KEY, x[0], p=0.5), "image"),
      (lambda: A.flip(KEY, f[0], p=0.5), "image"),
      (lambda: A.flip(KEY, f, p=1.5), "p"),
      (lambda: A.crop_box(KEY, 8, 8, scale=(0.5, 0.1)), "scale"),
      (lambda: A.crop_box(KEY, 8, 8, ratio=(0.0, 1.0)), "ratio"),
      (lambda: A.color_jitter(KEY, f, hue=0.7), "hue"),
      (lambda: A.color_jitter(KEY, f, brightness=-1.0), "brightness"),
      (lambda: A.gaussian_blur(KEY, f, sigma=(2.0, 1.0)), "sigma"),
      (lambda: A.blur(f, 1.0, radius=8), "radius"),
      (lambda: A.normalize(f, mean=(0.5,) * 3, std=(1.0, 0.0, 1.0)), "std"),
      (lambda: A.to_float(f), "uint8"),
      (lambda: A.batched(A.flip)(KEY, f), "images"),
      (lambda: A.preset("multicrop", image_size=32, num_local=-1), "num_local"),
      (lambda: A.default_stats(2), "channels"),
  ]
  for call, match in cases:
    with pytest.raises(ValueError, match=match):
      call()
