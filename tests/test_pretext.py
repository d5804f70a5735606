"""ssljax.pretext rotations, jigsaw and relative patches against numpy.

References are written from the papers' definitions with explicit loops
(itertools for permutations, slicing for crops); none calls the code under
test.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ssljax import pretext

from _crop_reference import np_standardize

KEY = jax.random.key(0)


def rand(shape, seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def run(fn, *args, **kwargs):
  """fn under jax.jit: one compile rather than op-by-op dispatch, which
  keeps the random label makers fast to test."""
  return jax.jit(functools.partial(fn, **kwargs))(*args)


def mesh8():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


# --------------------------------------------------------------- rotation ---


def np_rot_ccw(image):
  """One counter-clockwise quarter turn as displayed: out[i, j] =
  image[j, W − 1 − i] (the right column becomes the top row)."""
  h, w = image.shape[:2]
  out = np.empty((w, h) + image.shape[2:], image.dtype)
  for i in range(w):
    for j in range(h):
      out[i, j] = image[j, w - 1 - i]
  return out


def np_rotate(image, k):
  for _ in range(k % 4):
    image = np_rot_ccw(image)
  return image


def test_rotation_hand_worked():
  x = np.array([[0., 1.], [2., 3.]], np.float32)[None, :, :, None]
  out = np.asarray(pretext.rotate(x, 1))[0, ..., 0]
  np.testing.assert_array_equal(out, [[1., 3.], [0., 2.]])
  np.testing.assert_array_equal(np_rot_ccw(x[0])[..., 0], out)


def test_rotations_match_loops_and_np_rot90():
  x = rand((3, 5, 5, 3))
  rotated, labels = pretext.rotations(x)
  assert rotated.shape == (12, 5, 5, 3) and rotated.dtype == jnp.float32
  assert labels.dtype == jnp.int32
  np.testing.assert_array_equal(labels, [0, 1, 2, 3] * 3)
  for b in range(3):
    for r in range(4):
      np.testing.assert_array_equal(rotated[4 * b + r], np_rotate(x[b], r))
      np.testing.assert_array_equal(rotated[4 * b + r],
                                    np.rot90(x[b], r, axes=(0, 1)))


def test_rotating_by_label_one_four_times_is_identity():
  x = rand((2, 6, 6, 1))
  y = x
  for turn in range(4):
    y = pretext.rotate(y, jnp.ones(2, jnp.int32))
    if turn < 3:
      assert not np.array_equal(y, x)
  np.testing.assert_array_equal(y, x)


def test_rotate_per_example_labels_are_taken_modulo_4():
  x = rand((4, 4, 4, 3))
  labels = np.array([0, 5, -1, 2], np.int32)
  out = jax.jit(pretext.rotate)(x, labels)
  for b in range(4):
    np.testing.assert_array_equal(out[b], np_rotate(x[b], labels[b]))
  np.testing.assert_array_equal(pretext.rotate(x, -1), pretext.rotate(x, 3))


def test_random_rotation_labels_and_images():
  x = rand((400, 3, 3, 1))
  rotated, labels = jax.jit(pretext.random_rotation)(KEY, x)
  labels = np.asarray(labels)
  assert labels.dtype == np.int32
  counts = np.bincount(labels, minlength=4)
  assert counts.sum() == 400 and counts.min() > 60, counts
  for b in range(0, 400, 37):
    np.testing.assert_array_equal(rotated[b], np_rotate(x[b], labels[b]))
  again, labels_again = pretext.random_rotation(KEY, x)
  np.testing.assert_array_equal(labels, labels_again)
  np.testing.assert_array_equal(rotated, again)
  _, other = pretext.random_rotation(jax.random.key(1), x)
  assert not np.array_equal(labels, other)


def test_rotation_vmap_bf16_and_sharded():
  x = rand((2, 8, 4, 4, 3))
  keys = jax.random.split(KEY, 2)
  rotated, labels = jax.vmap(pretext.random_rotation)(keys, x)
  assert rotated.shape == (2, 8, 4, 4, 3) and labels.shape == (2, 8)
  half = pretext.rotations(jnp.asarray(x[0], jnp.bfloat16))[0]
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, pretext.rotations(x[0])[0], atol=4e-3)
  sharded = jax.device_put(x[0], NamedSharding(mesh8(), P("data")))
  for fn in (pretext.rotations, lambda v: pretext.random_rotation(KEY, v)):
    for got, want in zip(jax.jit(fn)(sharded), fn(x[0])):
      np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("call, match", [
    (lambda: pretext.rotations(np.zeros((2, 4, 5, 3), np.float32)), "images"),
    (lambda: pretext.rotations(np.zeros((4, 4, 3), np.float32)), "images"),
    (lambda: pretext.rotations(np.zeros((2, 4, 4, 2), np.float32)), "images"),
    (lambda: pretext.rotations(np.zeros((2, 4, 4, 3), np.uint8)), "images"),
    (lambda: pretext.random_rotation(KEY, np.zeros((1, 3, 2, 1))), "images"),
    (lambda: pretext.rotate(np.zeros((2, 4, 4, 1)), np.zeros(3, np.int32)),
     "labels"),
    (lambda: pretext.rotate(np.zeros((2, 4, 4, 1)), np.zeros(2)), "labels"),
])
def test_rotation_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------------------- permutation set ---


def np_hamming(p, q):
  return sum(int(a != b) for a, b in zip(p, q))


def np_greedy(num_tiles, num_permutations, start, criterion):
  """Noroozi & Favaro's greedy selection with explicit loops: at each step
  the first (lexicographic) unchosen permutation with the largest min (or
  summed) Hamming distance to the chosen ones."""
  candidates = list(itertools.permutations(range(num_tiles)))
  chosen = [tuple(start)]
  while len(chosen) < num_permutations:
    best, best_score = None, -1
    for cand in candidates:
      if cand in chosen:
        continue
      dists = [np_hamming(cand, s) for s in chosen]
      score = min(dists) if criterion == "min" else sum(dists)
      if score > best_score:
        best, best_score = cand, score
    chosen.append(best)
  return np.array(chosen)


def np_greedy_vectorised(num_permutations, start):
  """The same "min" greedy for 9 tiles, with direct Hamming distances."""
  candidates = np.array(list(itertools.permutations(range(9))), np.int8)
  index = int(np.flatnonzero((candidates == start).all(axis=1))[0])
  order = [index]
  min_dist = np.full(len(candidates), 99)
  for _ in range(num_permutations - 1):
    dist = (candidates != candidates[index]).sum(axis=1)
    min_dist = np.minimum(min_dist, dist)
    index = int(np.argmax(min_dist))  # chosen ones sit at distance 0
    order.append(index)
  return candidates[order]


def pairwise_min_mean(perms):
  n = len(perms)
  dists = [np_hamming(perms[i], perms[j])
           for i in range(n) for j in range(i + 1, n)]
  return min(dists), np.mean(dists)


@pytest.mark.parametrize("num_tiles, size", [(4, 24), (5, 12)])
@pytest.mark.parametrize("criterion", ["min", "mean"])
def test_permutation_set_matches_loop_greedy(num_tiles, size, criterion):
  for seed in (0, 3):
    perms = pretext.permutation_set(size, num_tiles=num_tiles, seed=seed,
                                    criterion=criterion)
    np.testing.assert_array_equal(
        perms, np_greedy(num_tiles, size, perms[0], criterion))


def test_permutation_set_small_case_against_brute_force_optimum():
  perms4 = list(itertools.permutations(range(4)))

  def best_min(size):
    return max(pairwise_min_mean(s)[0]
               for s in itertools.combinations(perms4, size))

  # Up to 4 permutations greedy reaches the optimum (a Latin square, all
  # pairs differ everywhere); for 5 it is below the optimum from seed 0.
  for size in (2, 3, 4):
    assert best_min(size) == 4
    for seed in range(4):
      got = pretext.permutation_set(size, num_tiles=4, seed=seed)
      assert pairwise_min_mean(got)[0] == 4
  assert best_min(5) == 3
  assert pairwise_min_mean(pretext.permutation_set(5, num_tiles=4))[0] == 2


def test_permutation_set_nine_tiles():
  perms = pretext.permutation_set(100)
  assert perms.shape == (100, 9) and perms.dtype == np.int32
  for row in perms:
    assert sorted(row) == list(range(9))
  assert len({tuple(r) for r in perms}) == 100
  np.testing.assert_array_equal(perms, np_greedy_vectorised(100, perms[0]))
  minimum, mean = pairwise_min_mean(perms)
  assert minimum == 6 and abs(mean - 8.03) < 0.01
  np.testing.assert_array_equal(perms, pretext.permutation_set(100))
  other = pretext.permutation_set(100, seed=1)
  assert not np.array_equal(perms[0], other[0])
  assert pairwise_min_mean(pretext.permutation_set(30, criterion="mean"))[0] < 6


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_permutations=25, num_tiles=4), "num_permutations"),
    (dict(num_permutations=0), "num_permutations"),
    (dict(num_permutations=2.0), "num_permutations"),
    (dict(num_permutations=2, num_tiles=1), "num_tiles"),
    (dict(num_permutations=2, num_tiles=11), "num_tiles"),
    (dict(num_permutations=2, criterion="max"), "criterion"),
])
def test_permutation_set_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pretext.permutation_set(**kwargs)


# ------------------------------------------------------------ jigsaw tiles ---

PERMS = pretext.permutation_set(10, num_tiles=9)


def find_offset(image, tile, top, left, cell):
  """(dy, dx) in the cell at (top, left) where `tile` was cut, or None."""
  t = tile.shape[0]
  for dy in range(cell - t + 1):
    for dx in range(cell - t + 1):
      y, x = top + dy, left + dx
      if np.array_equal(image[y:y + t, x:x + t], tile):
        return dy, dx
  return None


@pytest.mark.parametrize("side, top", [(12, 0), (14, 1)])
def test_jigsaw_tiles_reassemble_with_inverse_permutation(side, top):
  x = rand((4, side, side, 3))
  tiles, labels = run(pretext.jigsaw_tiles, KEY, x, PERMS, tile_size=4,
                      jitter=0, normalize=False)
  assert tiles.shape == (4, 9, 4, 4, 3) and labels.dtype == jnp.int32
  for b in range(4):
    perm = PERMS[int(labels[b])]
    image = np.zeros((12, 12, 3), np.float32)
    for position in range(9):
      r, c = divmod(int(perm[position]), 3)
      image[4 * r:4 * r + 4, 4 * c:4 * c + 4] = tiles[b, position]
    np.testing.assert_array_equal(image, x[b, top:top + 12, top:top + 12])


def test_jigsaw_tiles_are_random_crops_inside_their_cells():
  x = rand((6, 15, 15, 1), seed=1)
  tiles, labels = run(pretext.jigsaw_tiles, KEY, x, PERMS, tile_size=3,
                      normalize=False)
  seen = set()
  for b in range(6):
    perm = PERMS[int(labels[b])]
    for position in range(9):
      r, c = divmod(int(perm[position]), 3)
      offset = find_offset(x[b], np.asarray(tiles[b, position]), 5 * r, 5 * c,
                           5)
      assert offset is not None
      seen.add(offset)
  assert len(seen) > 5  # the whole 3 × 3 range of offsets gets used
  # 1-pixel tiles, jitter=1: within one pixel of the centred offset (2, 2).
  tiles, labels = run(pretext.jigsaw_tiles, KEY, x, PERMS, tile_size=1,
                      jitter=1, normalize=False)
  seen = set()
  for b in range(6):
    for position in range(9):
      r, c = divmod(int(PERMS[int(labels[b])][position]), 3)
      dy, dx = find_offset(x[b], np.asarray(tiles[b, position]), 5 * r, 5 * c,
                           5)
      assert abs(dy - 2) <= 1 and abs(dx - 2) <= 1
      seen.add((dy, dx))
  assert len(seen) == 9


def test_jigsaw_tiles_normalisation_and_labels():
  x = rand((16, 9, 9, 3), seed=2)
  raw, labels = run(pretext.jigsaw_tiles, KEY, x, PERMS, normalize=False)
  tiles, same_labels = run(pretext.jigsaw_tiles, KEY, x, PERMS)
  np.testing.assert_array_equal(labels, same_labels)
  assert tiles.shape == (16, 9, 2, 2, 3)  # default tile: 3 · 64 // 75 = 2
  for b in range(16):
    for i in range(9):
      np.testing.assert_allclose(tiles[b, i], np_standardize(raw[b, i]),
                                 rtol=1e-4, atol=1e-4)
  assert set(np.asarray(labels).tolist()) <= set(range(10))
  assert len(set(np.asarray(labels).tolist())) > 3
  flat = run(pretext.jigsaw_tiles, KEY, np.full_like(x, 0.5), PERMS)[0]
  np.testing.assert_array_equal(flat, 0.0)


def test_jigsaw_tiles_eager_bf16_and_sharded_global_view():
  x = rand((8, 9, 9, 3), seed=3)
  fn = functools.partial(pretext.jigsaw_tiles, permutations=PERMS,
                         tile_size=2)
  want_tiles, want_labels = jax.jit(fn)(KEY, x)
  eager_tiles, eager_labels = fn(KEY, x)
  np.testing.assert_allclose(eager_tiles, want_tiles, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(eager_labels, want_labels)
  half, half_labels = jax.jit(fn)(KEY, jnp.asarray(x, jnp.bfloat16))
  assert half.dtype == jnp.float32
  np.testing.assert_array_equal(half_labels, want_labels)
  sharded = jax.device_put(x, NamedSharding(mesh8(), P("data")))
  tiles, labels = jax.jit(fn)(KEY, sharded)
  np.testing.assert_allclose(tiles, want_tiles, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(labels, want_labels)


@pytest.mark.parametrize("kwargs, match", [
    (dict(permutations=PERMS[:, :4]), "permutations"),
    (dict(permutations=PERMS.astype(np.float32)), "permutations"),
    (dict(permutations=np.zeros((2, 9), np.int32)), "permutations"),
    (dict(permutations=PERMS[0]), "permutations"),
    (dict(permutations=PERMS, grid=2), "permutations"),
    (dict(permutations=PERMS, grid=0), "grid"),
    (dict(permutations=PERMS, tile_size=5), "tile_size"),
    (dict(permutations=PERMS, tile_size=0), "tile_size"),
    (dict(permutations=PERMS, tile_size=2, jitter=2), "jitter"),
    (dict(permutations=PERMS, jitter=-1), "jitter"),
])
def test_jigsaw_tiles_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pretext.jigsaw_tiles(KEY, np.zeros((2, 12, 12, 3), np.float32), **kwargs)
  with pytest.raises(ValueError, match="images"):
    pretext.jigsaw_tiles(KEY, np.zeros((12, 12, 3), np.float32), PERMS)


# --------------------------------------------------------- relative patch ---

# Label -> (row, column) of the neighbour cell around the centre (1, 1),
# read off the documented diagram 0 1 2 / 3 X 4 / 5 6 7.
LABEL_TO_CELL = {0: (0, 0), 1: (0, 1), 2: (0, 2), 3: (1, 0), 4: (1, 2),
                 5: (2, 0), 6: (2, 1), 7: (2, 2)}


def cell_image(batch, grid, cell):
  """Cell (r, c) holds the constant 10·r + c."""
  values = np.add.outer(10 * np.arange(grid), np.arange(grid))
  image = np.kron(values, np.ones((cell, cell)))
  return np.broadcast_to(image[None, :, :, None],
                         (batch, grid * cell, grid * cell, 1)).astype(
                             np.float32)


def test_relative_patch_labels_hand_worked():
  x = cell_image(64, 3, 4)
  centre, neighbour, labels = run(pretext.relative_patches, KEY, x,
                                  patch_size=2, normalize=False)
  assert centre.shape == neighbour.shape == (64, 2, 2, 1)
  labels = np.asarray(labels)
  assert labels.dtype == np.int32 and set(labels.tolist()) == set(range(8))
  for b in range(64):
    np.testing.assert_array_equal(centre[b], 11.0)
    r, c = LABEL_TO_CELL[int(labels[b])]
    np.testing.assert_array_equal(neighbour[b], 10 * r + c)


def test_relative_patch_positions_gap_and_jitter():
  x = rand((32, 20, 20, 3), seed=4)
  # cell 6 (one spare pixel at each border), gap 2 -> patch 4 centred: the
  # unjittered patch of cell (r, c) starts at 1 + 6·(r, c) + 1.
  centre, neighbour, labels = run(pretext.relative_patches, KEY, x, gap=2,
                                  jitter=0, normalize=False)
  for b in range(32):
    r, c = LABEL_TO_CELL[int(labels[b])]
    np.testing.assert_array_equal(centre[b], x[b, 8:12, 8:12])
    np.testing.assert_array_equal(
        neighbour[b], x[b, 2 + 6 * r:6 + 6 * r, 2 + 6 * c:6 + 6 * c])
  centre, neighbour, labels = run(pretext.relative_patches, KEY, x, gap=2,
                                  jitter=1, normalize=False)
  shifts = set()
  for b in range(32):
    r, c = LABEL_TO_CELL[int(labels[b])]
    for patch, (rr, cc) in ((centre[b], (1, 1)), (neighbour[b], (r, c))):
      offset = find_offset(x[b], np.asarray(patch), 1 + 6 * rr, 1 + 6 * cc, 6)
      assert offset is not None
      assert abs(offset[0] - 1) <= 1 and abs(offset[1] - 1) <= 1
      shifts.add(offset)
  assert len(shifts) == 9


def test_relative_patch_larger_grid_uses_interior_centres():
  x = cell_image(64, 5, 3)
  centre, neighbour, labels = run(pretext.relative_patches, KEY, x, grid=5,
                                  patch_size=2, normalize=False)
  centres = set()
  for b in range(64):
    value = int(centre[b, 0, 0, 0])
    np.testing.assert_array_equal(centre[b], value)
    r, c = divmod(value, 10)
    assert 1 <= r <= 3 and 1 <= c <= 3
    centres.add((r, c))
    dr, dc = LABEL_TO_CELL[int(labels[b])]
    np.testing.assert_array_equal(neighbour[b], 10 * (r + dr - 1) + c + dc - 1)
  assert len(centres) == 9


def test_relative_patch_chromatic_counter_measures():
  x = rand((8, 12, 12, 3), seed=5)
  unscaled = dict(jitter=0, normalize=False)
  plain = run(pretext.relative_patches, KEY, x, **unscaled)
  projected = run(pretext.relative_patches, KEY, x, chromatic="projection",
                  **unscaled)
  axis = np.array([-1.0, 2.0, -1.0])
  for got, raw in zip(projected[:2], plain[:2]):
    raw = np.asarray(raw, np.float64)
    want = np.empty_like(raw)
    for index in np.ndindex(raw.shape[:3]):
      pixel = raw[index]
      want[index] = pixel - (pixel @ axis) / (axis @ axis) * axis
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got) @ axis, 0.0, atol=1e-5)
  np.testing.assert_array_equal(projected[2], plain[2])
  dropped = run(pretext.relative_patches, KEY, x, chromatic="drop",
                **unscaled)
  kept_channels = []
  for got, raw in zip(dropped[:2], plain[:2]):
    for b in range(8):
      same = [np.array_equal(got[b, ..., k], raw[b, ..., k]) for k in range(3)]
      assert sum(same) == 1
      keep = same.index(True)
      kept_channels.append(keep)
      kept_std = np.std(np.asarray(raw[b, ..., keep]))
      for k in range(3):
        if k != keep:
          noise_std = np.std(np.asarray(got[b, ..., k]))
          assert 0.2 * kept_std / 100 < noise_std < 3 * kept_std / 100
  assert len(set(kept_channels)) == 3


def np_resample(image, size):
  """Linear resampling of a square [n, n, C] image to [size, size, C], at
  half-pixel centres with the sources clamped to the image, by loops."""
  n = image.shape[0]
  out = np.zeros((size, size) + image.shape[2:])

  def taps(i):
    source = min(max((i + 0.5) * n / size - 0.5, 0.0), n - 1)
    low = int(np.floor(source))
    return [(low, 1 - (source - low)), (min(low + 1, n - 1), source - low)]

  for i in range(size):
    for j in range(size):
      for r, wr in taps(i):
        for c, wc in taps(j):
          out[i, j] += wr * wc * image[r, c]
  return out


def test_relative_patch_blur_resamples_a_share_of_the_patches():
  # The authors' prep_image: a third of the 96-pixel patches go down to
  # 10..95 pixels and back up; here scaled to the 16-pixel patches, 1..15.
  x = rand((24, 72, 72, 1), seed=8)
  plain = run(pretext.relative_patches, KEY, x, normalize=False)
  blurred = run(pretext.relative_patches, KEY, x, normalize=False,
                blur_prob=0.5)
  np.testing.assert_array_equal(blurred[2], plain[2])
  changed = 0
  for got, raw in zip(blurred[:2], plain[:2]):
    for b in range(24):
      got_b, raw_b = np.asarray(got[b], np.float64), np.asarray(raw[b])
      if np.array_equal(got_b, raw_b):
        continue
      changed += 1
      errors = [np.abs(np_resample(np_resample(raw_b, side), 16) - got_b).max()
                for side in range(1, 16)]
      assert min(errors) < 1e-5, errors
  assert 12 <= changed <= 36, changed  # about half of the 48 patches


@pytest.mark.parametrize("chromatic", ["none", "projection", "drop"])
def test_relative_patch_standardises_each_patch_after_the_chromatic_step(
    chromatic):
  x = rand((6, 12, 12, 3), seed=7)
  raw = run(pretext.relative_patches, KEY, x, chromatic=chromatic,
            normalize=False)
  got = run(pretext.relative_patches, KEY, x, chromatic=chromatic)
  np.testing.assert_array_equal(got[2], raw[2])
  for patches, raw_patches in zip(got[:2], raw[:2]):
    for b in range(6):
      want = np_standardize(raw_patches[b], joint_channels=True)
      np.testing.assert_allclose(patches[b], want, atol=1e-5)
      # 1 up to the 1e-6 added to the variance.
      np.testing.assert_allclose(np.mean(np.square(want)), 1.0, rtol=1e-3)
      if chromatic == "drop":
        # One scale for the patch: the noise channels stay 1/100 as strong.
        stds = sorted(np.std(np.asarray(patches[b]), axis=(0, 1)))
        assert stds[1] < 0.05 * stds[2]


def test_relative_patch_standardises_a_flat_patch_to_zero():
  x = np.full((2, 12, 12, 1), 0.7, np.float32)
  centre, neighbour, _ = run(pretext.relative_patches, KEY, x)
  np.testing.assert_allclose(centre, 0.0, atol=1e-4)
  np.testing.assert_allclose(neighbour, 0.0, atol=1e-4)


@pytest.mark.parametrize("normalize, atol", [(False, 4e-3), (True, 2e-2)])
def test_relative_patch_bf16(normalize, atol):
  # bf16 keeps 8 bits: 4e-3 of a [0, 1] pixel, about 3.5 times more once a
  # patch of standard deviation ~0.29 is scaled to 1.
  x = rand((4, 12, 12, 3), seed=6)
  half = run(pretext.relative_patches, KEY, jnp.asarray(x, jnp.bfloat16),
             normalize=normalize)
  want = run(pretext.relative_patches, KEY, x, normalize=normalize)
  assert half[0].dtype == half[1].dtype == jnp.float32
  for got, ref in zip(half[:2], want[:2]):
    np.testing.assert_allclose(got, ref, atol=atol)
  np.testing.assert_array_equal(half[2], want[2])


@pytest.mark.parametrize("kwargs, match", [
    (dict(grid=2), "grid"),
    (dict(patch_size=3, gap=2), "patch_size"),
    (dict(patch_size=5), "patch_size"),
    (dict(gap=4), "gap"),
    (dict(gap=-1), "gap"),
    (dict(gap=2, jitter=2), "jitter"),
    (dict(chromatic="colour"), "chromatic"),
    (dict(blur_prob=1.5), "blur_prob"),
])
def test_relative_patch_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pretext.relative_patches(KEY, np.zeros((2, 12, 12, 3), np.float32),
                             **kwargs)


def test_relative_patch_chromatic_needs_rgb():
  with pytest.raises(ValueError, match="chromatic"):
    pretext.relative_patches(KEY, np.zeros((2, 12, 12, 1), np.float32),
                             chromatic="drop")
  with pytest.raises(ValueError, match="images"):
    pretext.relative_patches(KEY, np.zeros((2, 2, 2, 1), np.float32))
