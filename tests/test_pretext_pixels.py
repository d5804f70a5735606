"""ssljax.pretext inpainting masks, Lab colour and denoising against numpy.

The colour references are the sRGB / CIE Lab formulas written out per value
in float64; mask and loss references are explicit loops.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from ssljax import pretext

KEY = jax.random.key(0)


def rand(shape, seed=0, low=0.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(
      np.float32)


def run(fn, *args, **kwargs):
  """fn under jax.jit: one compile rather than op-by-op dispatch."""
  return jax.jit(functools.partial(fn, **kwargs))(*args)


# ------------------------------------------------------------------ masks ---


def test_center_mask_hand_worked_and_area():
  mask = pretext.center_mask((2, 8, 8, 3))
  assert mask.shape == (2, 8, 8, 1) and mask.dtype == jnp.float32
  want = np.zeros((8, 8))
  want[2:6, 2:6] = 1
  for b in range(2):
    np.testing.assert_array_equal(mask[b, ..., 0], want)
  # 12 × 6 image, 1/9 of the area: a 4 × 2 hole at rows 4..7, columns 2..3.
  mask = np.asarray(pretext.center_mask((1, 12, 6, 1), fraction=1 / 9))
  want = np.zeros((12, 6))
  want[4:8, 2:4] = 1
  np.testing.assert_array_equal(mask[0, ..., 0], want)
  for side, fraction in ((10, 0.25), (16, 0.25), (20, 0.36), (7, 1.0)):
    area = float(pretext.center_mask((1, side, side, 1), fraction).sum())
    assert area == round(side * np.sqrt(fraction)) ** 2
    assert abs(area / side ** 2 - fraction) < 2.5 / side


def test_random_block_mask_is_a_union_of_blocks():
  shape = (64, 10, 9, 3)
  one_block = np.asarray(run(pretext.random_block_mask, KEY, shape=shape,
                             num_blocks=1, block_size=3))
  assert one_block.shape == (64, 10, 9, 1)
  corners = set()
  for b in range(64):
    rows, cols = np.nonzero(one_block[b, ..., 0])
    top, left = rows.min(), cols.min()
    want = np.zeros((10, 9))
    want[top:top + 3, left:left + 3] = 1
    np.testing.assert_array_equal(one_block[b, ..., 0], want)
    corners.add((top, left))
  tops, lefts = zip(*corners)
  assert min(tops) == 0 and max(tops) == 7 and min(lefts) == 0
  assert max(lefts) == 6
  masks = np.asarray(run(pretext.random_block_mask, KEY, shape=shape,
                         num_blocks=4, block_size=2))
  areas = masks.sum(axis=(1, 2, 3))
  assert areas.min() >= 4 and areas.max() <= 16 and areas.max() == 16
  assert set(np.unique(masks).tolist()) == {0.0, 1.0}


def test_apply_mask_matches_numpy():
  x = rand((2, 4, 4, 3))
  mask = np.asarray(pretext.center_mask(x.shape))
  fill = np.array([0.1, 0.2, 0.3], np.float32)
  out = pretext.apply_mask(x, mask, fill)
  want = x.copy()
  for b, i, j in itertools.product(range(2), range(4), range(4)):
    if mask[b, i, j, 0]:
      want[b, i, j] = fill
  np.testing.assert_allclose(out, want, rtol=1e-6)
  np.testing.assert_allclose(pretext.apply_mask(x, mask), x * (1 - mask))


def np_masked_l2(pred, target, mask, overlap, weight):
  pred, target = np.float64(pred), np.float64(target)
  batch, height, width, channels = pred.shape
  total, norm = 0.0, 0.0
  for b, i, j in itertools.product(range(batch), range(height), range(width)):
    window = mask[b, max(0, i - overlap):i + overlap + 1,
                  max(0, j - overlap):j + overlap + 1, 0]
    if mask[b, i, j, 0]:
      w = 1.0
    elif window.any():
      w = weight
    else:
      continue
    total += w * np.sum((pred[b, i, j] - target[b, i, j]) ** 2)
    norm += w * channels
  return total / norm


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_masked_l2_matches_numpy(overlap):
  pred, target = rand((2, 8, 8, 3), 1), rand((2, 8, 8, 3), 2)
  mask = np.asarray(run(pretext.random_block_mask, KEY, shape=pred.shape,
                        num_blocks=2, block_size=2))
  got = run(pretext.masked_l2, pred, target, mask, overlap=overlap,
            overlap_weight=10.0)
  want = np_masked_l2(pred, target, mask, overlap, 10.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_masked_l2_gradients_empty_mask_and_bf16():
  pred, target = rand((2, 6, 6, 1), 3), rand((2, 6, 6, 1), 4)
  mask = np.asarray(pretext.center_mask(pred.shape))
  with jax.enable_x64(True):
    check_grads(jax.jit(lambda p, t: pretext.masked_l2(p, t, mask, overlap=1)),
                (np.float64(pred), np.float64(target)), order=1,
                modes=["rev"])
  empty = np.zeros_like(mask)
  value, grad = jax.value_and_grad(pretext.masked_l2)(pred, target, empty)
  assert float(value) == 0.0 and np.all(np.isfinite(grad))
  half = pretext.masked_l2(jnp.asarray(pred, jnp.bfloat16),
                           jnp.asarray(target, jnp.bfloat16), mask)
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, pretext.masked_l2(pred, target, mask),
                             rtol=2e-2)


def test_masked_l2_global_view_and_shard_map():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  pred, target = rand((16, 6, 6, 3), 5), rand((16, 6, 6, 3), 6)
  # Hole sizes differ between devices, so per-device means would be wrong.
  mask = np.asarray(run(pretext.random_block_mask, KEY, shape=pred.shape,
                        num_blocks=3, block_size=2))
  loss = functools.partial(pretext.masked_l2, overlap=1)
  sharded = [jax.device_put(v, NamedSharding(mesh, P("data")))
             for v in (pred, target, mask)]
  np.testing.assert_allclose(jax.jit(loss)(*sharded),
                             loss(pred, target, mask), rtol=1e-5)

  def per_device(p):
    per = jax.shard_map(
        lambda a, b, m: loss(a, b, m, axis_name="data")[None], mesh=mesh,
        in_specs=(P("data"),) * 3, out_specs=P("data"))(p, target, mask)
    return per.mean()

  np.testing.assert_allclose(per_device(pred), loss(pred, target, mask),
                             rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(jax.grad(per_device))(pred),
      jax.grad(loss)(pred, target, mask), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("call, match", [
    (lambda: pretext.center_mask((4, 4)), "shape"),
    (lambda: pretext.center_mask((1, 4, 4, 0)), "shape"),
    (lambda: pretext.center_mask((1, 4, 4, 1), fraction=0.0), "fraction"),
    (lambda: pretext.center_mask((1, 4, 4, 1), fraction=1.5), "fraction"),
    (lambda: pretext.random_block_mask(KEY, (1, 4, 4, 1), num_blocks=0,
                                       block_size=2), "num_blocks"),
    (lambda: pretext.random_block_mask(KEY, (1, 4, 4, 1), num_blocks=1,
                                       block_size=5), "block_size"),
    (lambda: pretext.random_block_mask(KEY, (4, 4, 1), num_blocks=1,
                                       block_size=2), "shape"),
    (lambda: pretext.apply_mask(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 3, 1))),
     "mask"),
    (lambda: pretext.apply_mask(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1)),
                                np.zeros(2)), "fill"),
    (lambda: pretext.apply_mask(np.zeros((4, 4, 3)), np.zeros((1, 4, 4, 1))),
     "images"),
    (lambda: pretext.masked_l2(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1)),
                               np.zeros((1, 4, 4, 1))), "target"),
    (lambda: pretext.masked_l2(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3)),
                               np.zeros((1, 4, 4, 2))), "mask"),
    (lambda: pretext.masked_l2(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3)),
                               np.zeros((1, 4, 4, 1)), overlap=-1), "overlap"),
    (lambda: pretext.masked_l2(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3)),
                               np.zeros((1, 4, 4, 1)), overlap_weight=0.0),
     "overlap_weight"),
])
def test_mask_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------------------------ Lab colour ---

# Written out independently of the module (B. Lindbloom's sRGB D65 matrix).
M = [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
WHITE = [0.95047, 1.0, 1.08883]
DELTA = 6 / 29


def np_rgb_to_lab(rgb):
  """Per-colour loops over the sRGB and CIE Lab formulas, float64."""
  rgb = np.asarray(rgb, np.float64)
  out = np.empty(rgb.shape)
  for index in np.ndindex(rgb.shape[:-1]):
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
           for c in rgb[index]]
    f = []
    for row, white in zip(M, WHITE):
      t = sum(m * c for m, c in zip(row, lin)) / white
      f.append(t ** (1 / 3) if t > DELTA ** 3
               else t / (3 * DELTA ** 2) + 4 / 29)
    out[index] = (116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]))
  return out


def np_lab_to_rgb(lab):
  lab = np.asarray(lab, np.float64)
  inverse = np.linalg.inv(np.array(M))
  out = np.empty(lab.shape)
  for index in np.ndindex(lab.shape[:-1]):
    lightness, a, b = lab[index]
    fy = (lightness + 16) / 116
    xyz = [white * (t ** 3 if t > DELTA else 3 * DELTA ** 2 * (t - 4 / 29))
           for t, white in zip((fy + a / 500, fy, fy - b / 200), WHITE)]
    for k in range(3):
      c = min(max(sum(inverse[k, j] * xyz[j] for j in range(3)), 0.0), 1.0)
      out[index + (k,)] = (12.92 * c if c <= 0.0031308
                           else 1.055 * c ** (1 / 2.4) - 0.055)
  return out


@pytest.mark.parametrize("rgb, lab", [
    ((1, 1, 1), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((1, 0, 0), (53.2408, 80.0925, 67.2032)),
    ((0, 1, 0), (87.7347, -86.1827, 83.1793)),
    ((0, 0, 1), (32.2970, 79.1875, -107.8602)),
    ((0.5, 0.5, 0.5), (53.3889, 0.0, 0.0)),
])
def test_known_lab_values(rgb, lab):
  got = pretext.rgb_to_lab(jnp.array(rgb, jnp.float32))
  np.testing.assert_allclose(got, lab, atol=2e-3)
  np.testing.assert_allclose(np_rgb_to_lab(rgb), lab, atol=1e-3)


def test_lab_matches_numpy_and_round_trips():
  # Include values below both knees of the piecewise functions.
  x = np.concatenate([rand((2, 5, 5, 3), 7), rand((1, 5, 5, 3), 8, 0, 0.03)])
  lab = jax.jit(pretext.rgb_to_lab)(x)
  assert lab.shape == x.shape and lab.dtype == jnp.float32
  np.testing.assert_allclose(lab, np_rgb_to_lab(x), rtol=1e-4, atol=2e-4)
  back = jax.jit(pretext.lab_to_rgb)(lab)
  np.testing.assert_allclose(back, np_lab_to_rgb(np_rgb_to_lab(x)),
                             atol=1e-5)
  np.testing.assert_allclose(back, x, atol=1e-4)
  with jax.enable_x64(True):
    x64 = np.float64(x)
    np.testing.assert_allclose(pretext.lab_to_rgb(pretext.rgb_to_lab(x64)),
                               x64, atol=1e-10)
  # Out of gamut: clipped to valid sRGB, as the reference.
  far = np.array([[50.0, 120.0, -120.0], [101.0, 0.0, 0.0]], np.float32)
  np.testing.assert_allclose(pretext.lab_to_rgb(far), np_lab_to_rgb(far),
                             atol=1e-5)
  assert np.all((np.asarray(pretext.lab_to_rgb(far)) >= 0)
                & (np.asarray(pretext.lab_to_rgb(far)) <= 1))


def test_lab_gradients_vmap_and_bf16():
  x = rand((2, 3, 3, 3), 9, 0.1, 0.9)
  with jax.enable_x64(True):
    x64 = np.float64(x)
    check_grads(jax.jit(pretext.rgb_to_lab), (x64,), order=1, modes=["rev"])
    check_grads(jax.jit(pretext.lab_to_rgb), (np_rgb_to_lab(x64),), order=1,
                modes=["rev"])
  # Black and white sit on the clamps of the piecewise functions.
  corners = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
  grad = jax.jit(jax.vmap(jax.jacrev(pretext.rgb_to_lab)))(corners)
  assert np.all(np.isfinite(grad))
  grad = jax.jit(jax.vmap(jax.jacrev(pretext.lab_to_rgb)))(
      np_rgb_to_lab(corners).astype(np.float32))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(jax.vmap(pretext.rgb_to_lab)(x),
                             pretext.rgb_to_lab(x), rtol=1e-6)
  half = pretext.rgb_to_lab(jnp.asarray(x, jnp.bfloat16))
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, pretext.rgb_to_lab(x), atol=1.0)


def test_one_channel_colorization_error():
  with pytest.raises(ValueError, match="colorization needs 3-channel images"):
    pretext.rgb_to_lab(np.zeros((2, 4, 4, 1), np.float32))
  with pytest.raises(ValueError, match="images"):
    pretext.rgb_to_lab(np.zeros((2, 4, 4, 3), np.int32))
  with pytest.raises(ValueError, match="lab"):
    pretext.lab_to_rgb(np.zeros((2, 2), np.float32))


# ----------------------------------------------------------- ab bins, Z ---

BINS = pretext.ab_bins()


def test_ab_bins_cover_the_srgb_gamut():
  assert BINS.shape == (261, 2) and BINS.dtype == np.float32
  assert np.all(BINS % 10 == 0)
  assert len({tuple(b) for b in BINS}) == len(BINS)
  assert [0.0, 0.0] in BINS.tolist()
  np.testing.assert_array_equal(BINS, sorted(BINS.tolist()))
  in_bins = {tuple(b) for b in BINS.tolist()}
  # Every cell that a coarse lattice of sRGB colours reaches is a bin...
  levels = np.linspace(0, 1, 17)
  lattice = np.array(list(itertools.product(levels, repeat=3)))
  coarse = {tuple(10.0 * np.round(ab / 10)) for ab in
            np_rgb_to_lab(lattice)[:, 1:]}
  assert coarse <= in_bins and len(coarse) == 255
  # ...and so is the cell of any 8-bit colour.
  colours = np.random.default_rng(0).integers(0, 256, (3000, 3)) / 255
  for ab in np_rgb_to_lab(colours)[:, 1:]:
    assert tuple(10.0 * np.round(ab / 10)) in in_bins
  assert pretext.ab_bins(20).shape[0] < len(BINS)


def np_encode(ab, bins, sigma, k):
  ab, bins = np.float64(ab), np.float64(bins)
  out = np.zeros(ab.shape[:-1] + (len(bins),))
  for index in np.ndindex(ab.shape[:-1]):
    d2 = np.array([np.sum((ab[index] - q) ** 2) for q in bins])
    nearest = np.argsort(d2, kind="stable")[:k]
    w = np.exp(-(d2[nearest] - d2[nearest].min()) / (2 * sigma ** 2))
    out[index + (nearest,)] = w / w.sum()
  return out


@pytest.mark.parametrize("sigma, k", [(5.0, 5), (2.0, 1), (20.0, 8)])
def test_encode_ab_matches_numpy(sigma, k):
  ab = np.concatenate([rand((2, 3, 2), 10, -80, 80),
                       np.array([[[5.0, 5.0], [300.0, -300.0], [0.0, 0.0]]],
                                np.float32)])
  z = run(pretext.encode_ab, ab, BINS, sigma=sigma, neighbours=k)
  assert z.shape == (3, 3, 261)
  np.testing.assert_allclose(z, np_encode(ab, BINS, sigma, k), atol=1e-6)
  np.testing.assert_allclose(z.sum(-1), 1.0, rtol=1e-6)
  support = (np.asarray(z) > 0).sum(-1)
  # Far from every bin the farther neighbours' weights underflow to 0.
  np.testing.assert_array_equal(support[:2], k)
  assert np.all((support[2] >= 1) & (support[2] <= k))


def np_decode(logits, bins, temperature):
  logits = np.float64(logits) / temperature
  out = np.zeros(logits.shape[:-1] + (2,))
  for index in np.ndindex(logits.shape[:-1]):
    p = np.exp(logits[index] - logits[index].max())
    p /= p.sum()
    out[index] = sum(p[q] * np.float64(bins[q]) for q in range(len(bins)))
  return out


def test_decode_ab_matches_numpy_and_limits():
  logits = rand((2, 3, 261), 11, -3, 3)
  for temperature in (0.38, 1.0, 2.5):
    got = run(pretext.decode_ab, logits, BINS, temperature=temperature)
    np.testing.assert_allclose(got, np_decode(logits, BINS, temperature),
                               rtol=1e-4, atol=1e-3)
  mode = pretext.decode_ab(logits, BINS, temperature=1e-6)
  np.testing.assert_allclose(mode, BINS[np.argmax(logits, -1)], atol=1e-3)
  mean = pretext.decode_ab(logits, BINS, temperature=1e6)
  np.testing.assert_allclose(mean, np.broadcast_to(BINS.mean(0), mean.shape),
                             atol=1e-2)
  for temperature in (1e-6, 1e6):
    grad = jax.grad(lambda l: pretext.decode_ab(
        l, BINS, temperature=temperature).sum())(logits)
    assert np.all(np.isfinite(grad))
  half = pretext.decode_ab(jnp.asarray(logits, jnp.bfloat16), BINS)
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, pretext.decode_ab(logits, BINS), atol=1.0)


def test_encode_decode_gradients():
  bins = BINS[:40]
  with jax.enable_x64(True):
    check_grads(jax.jit(lambda l: pretext.decode_ab(l, bins)),
                (np.float64(rand((3, 40), 12)),), order=1, modes=["rev"])
    check_grads(jax.jit(lambda ab: pretext.encode_ab(ab, bins)),
                (np.float64(rand((4, 2), 13, -60, 60)),), order=1,
                modes=["rev"])


@pytest.mark.parametrize("call, match", [
    (lambda: pretext.ab_bins(0), "grid"),
    (lambda: pretext.encode_ab(np.zeros((4, 3)), BINS), "ab"),
    (lambda: pretext.encode_ab(np.zeros((4, 2)), BINS[:, :1]), "bins"),
    (lambda: pretext.encode_ab(np.zeros((4, 2)), BINS, sigma=0.0), "sigma"),
    (lambda: pretext.encode_ab(np.zeros((4, 2)), BINS[:3]), "neighbours"),
    (lambda: pretext.encode_ab(np.zeros((4, 2)), BINS, neighbours=0),
     "neighbours"),
    (lambda: pretext.decode_ab(np.zeros((4, 260)), BINS), "logits"),
    (lambda: pretext.decode_ab(np.zeros((4, 261)), BINS, temperature=0.0),
     "temperature"),
    (lambda: pretext.decode_ab(np.zeros((4, 261)), BINS[0]), "bins"),
])
def test_colour_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# -------------------------------------------------------------- denoising ---


def test_gaussian_corruption_statistics():
  x = rand((16, 8, 8, 3), 14)
  noisy = run(pretext.corrupt, KEY, x, kind="gaussian", level=0.2)
  noise = np.asarray(noisy) - x
  assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.2) < 0.01
  assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.2
  np.testing.assert_array_equal(
      run(pretext.corrupt, KEY, x, kind="gaussian", level=0.0), x)
  # The default level for Gaussian noise is 0.1.
  default = np.asarray(run(pretext.corrupt, KEY, x)) - x
  np.testing.assert_allclose(default, noise / 2, atol=1e-6)


@pytest.mark.parametrize("kind", ["masking", "salt_pepper"])
def test_masking_and_salt_pepper_corrupt_an_exact_count(kind):
  x = np.full((8, 5, 5, 3), 0.5, np.float32)
  values = {0.0} if kind == "masking" else {0.0, 1.0}
  for level, count in ((0.25, 19), (1.0, 75)):
    noisy = np.asarray(run(pretext.corrupt, KEY, x, kind=kind, level=level))
    changed = noisy != 0.5
    np.testing.assert_array_equal(changed.sum(axis=(1, 2, 3)), count)
    assert set(np.unique(noisy[changed]).tolist()) <= values
    if level == 0.25:
      assert not np.array_equal(changed[0], changed[1])
  if kind == "salt_pepper":
    assert 0.3 < (noisy == 1.0).mean() < 0.7
  else:
    np.testing.assert_array_equal(
        pretext.corrupt(KEY, x[:1], kind=kind, level=0.0), x[:1])


def test_corrupt_bf16():
  x = rand((2, 4, 4, 1), 15)
  half = pretext.corrupt(KEY, jnp.asarray(x, jnp.bfloat16), kind="masking")
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, pretext.corrupt(KEY, x, kind="masking"),
                             atol=4e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="dropout"), "kind"),
    (dict(kind="gaussian", level=-0.1), "level"),
    (dict(kind="masking", level=1.5), "level"),
    (dict(kind="salt_pepper", level=jnp.float32(0.1)), "level"),
])
def test_corrupt_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pretext.corrupt(KEY, np.zeros((2, 4, 4, 3), np.float32), **kwargs)
  with pytest.raises(ValueError, match="images"):
    pretext.corrupt(KEY, np.zeros((2, 4, 4), np.float32))
