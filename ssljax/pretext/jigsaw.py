"""Jigsaw puzzle labels (Noroozi and Favaro 2016).

Noroozi and Favaro, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles", ECCV 2016: an image is cut into a 3 × 3 grid of
tiles, the tiles are shuffled by one of P fixed permutations, and a network
(shared across tiles) classifies which permutation was used.

* `permutation_set` chooses the P permutations far apart in Hamming distance
  (the paper's Algorithm 1), so that the P classes are distinguishable.
* `jigsaw_tiles` cuts and shuffles a batch. Against shortcuts, as in the paper:
  each tile is a random crop inside its cell (64 of 75 pixels in the paper),
  so tiles neither share edges nor sit at fixed offsets, and each tile is
  normalised to zero mean and unit standard deviation on its own, so that
  low-level statistics do not match across tiles.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.pretext import _images

__all__ = ["permutation_set", "jigsaw_tiles"]

# Tile side / cell side in the paper: 64-pixel tiles in 75-pixel cells of a
# 225-pixel crop.
_TILE_RATIO = (64, 75)
# 10! permutations of 10 tiles take 36 MB as int8; 11! would take 440 MB.
_MAX_TILES = 10
# Score of an already chosen permutation in `permutation_set`: above any
# running max or sum of matches (at most num_tiles · P < 2**25).
_CHOSEN = 2**30


@functools.lru_cache(maxsize=None)
def _all_permutations(n: int) -> np.ndarray:
  """[n!, n] int8, every permutation of 0..n-1 in lexicographic order.

  Built from those of n − 1 elements: for each first value v (ascending),
  the rest are the (lexicographic) permutations of n − 1 elements with
  values >= v shifted up by one. The array is read-only because it is cached.
  """
  perms = np.zeros((1, 0), np.int8)
  for size in range(1, n + 1):
    first = np.repeat(np.arange(size, dtype=np.int8), len(perms))
    rest = np.tile(perms, (size, 1))
    rest = rest + (rest >= first[:, None])
    perms = np.concatenate([first[:, None], rest], axis=1)
  perms.flags.writeable = False
  return perms


def permutation_set(num_permutations: int, *, num_tiles: int = 9,
                    seed: int = 0, criterion: str = "min") -> np.ndarray:
  """Greedy maximal-Hamming-distance permutation set (Noroozi & Favaro).

  Starting from a uniformly random permutation, repeatedly adds the
  not-yet-chosen permutation of `num_tiles` elements that is farthest from
  the chosen set S, among all num_tiles! of them:

      criterion="min":   j = argmax_k  min_{s in S}  H(p_k, s)
      criterion="mean":  j = argmax_k  Σ_{s in S}   H(p_k, s)

  with H the Hamming distance (the number of positions where two
  permutations differ). "min" is farthest-point selection: each new
  permutation is as far as possible from its nearest chosen one, which
  keeps the set's minimum distance high; "mean" is the paper's Algorithm 1
  as printed (D̄ = 1ᵀD, the summed distances): it maximises the average
  distance but admits permutations at distance 2 from a chosen one. Ties go
  to the first candidate in lexicographic order, so the set depends only on
  `seed` (which picks the start). Greedy is not optimal: for 4 tiles the
  best 5 permutations are pairwise at distance >= 3, while greedy from most
  starts ends at a minimum of 2.

  Each step is a few vector operations over all num_tiles! candidates (9
  tiles, P = 1000: a few seconds). Pairwise distances of the sets for 9
  tiles, seed 0 (min / mean over pairs):

      P      "min"          "mean"
      30     7 / 8.03       2 / 8.26
      100    6 / 8.03       2 / 8.08
      1000   5 / 7.91       2 / 8.01

  Args:
    num_permutations: P, 1 <= P <= num_tiles!.
    num_tiles: elements per permutation, 2..10 (9 for a 3 × 3 jigsaw).
    seed: seeds the numpy generator that picks the first permutation.
    criterion: "min" (default) or "mean", see above.

  Returns:
    [P, num_tiles] int32 numpy array; each row a permutation, all distinct,
    in the order chosen (row 0 the random start).

  Example:
    >>> import numpy as np
    >>> perms = permutation_set(100)
    >>> d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    >>> print(perms.shape, d[~np.eye(100, dtype=bool)].min())
    (100, 9) 6
  """
  fn = "permutation_set"
  _common.check_count(num_tiles, "num_tiles", fn, minimum=2)
  if num_tiles > _MAX_TILES:
    raise ValueError(f"{fn}: `num_tiles` must be <= {_MAX_TILES} (all "
                     f"num_tiles! permutations are enumerated), got "
                     f"{num_tiles}.")
  total = math.factorial(num_tiles)
  _common.check_count(num_permutations, "num_permutations", fn, minimum=1)
  if num_permutations > total:
    raise ValueError(
        f"{fn}: `num_permutations` must be <= {num_tiles}! = {total}, got "
        f"{num_permutations}.")
  _images.check_choice(criterion, ("min", "mean"), "criterion", fn)

  candidates = _all_permutations(num_tiles)
  # matches[i, v, k] = [candidate k holds value v at position i], so that
  # Σ_i matches[i, s(i)] = num_tiles − H(p_k, s) for all k at once. The
  # greedy step then minimises the running max ("min") or sum ("mean") of
  # matches, which maximises the min or sum of distances.
  matches = (candidates.T[:, None, :]
             == np.arange(num_tiles, dtype=np.int8)[None, :, None]
             ).astype(np.uint8)
  positions = np.arange(num_tiles)
  score = np.zeros(total, np.int32)
  j = int(np.random.default_rng(seed).integers(total))
  order = [j]
  for _ in range(num_permutations - 1):
    match = matches[positions, candidates[j]].sum(axis=0, dtype=np.uint8)
    if criterion == "min":
      np.maximum(score, match, out=score)
    else:
      score += match
    score[j] = _CHOSEN
    j = int(np.argmin(score))
    order.append(j)
  return candidates[order].astype(np.int32)


def _check_permutations(permutations, num_tiles: int, fn: str) -> None:
  """[P, num_tiles] integers; when concrete, every row a permutation."""
  _common.check_rank(permutations, 2, "permutations", fn)
  _common.check_integer(permutations, "permutations", fn)
  if np.shape(permutations)[1] != num_tiles:
    raise ValueError(
        f"{fn}: `permutations` must be [P, grid²] = [P, {num_tiles}], got "
        f"shape {np.shape(permutations)}.")
  if _common.is_concrete(permutations):
    rows = np.sort(np.asarray(permutations), axis=1)
    bad = np.flatnonzero(np.any(rows != np.arange(num_tiles), axis=1))
    if bad.size:
      raise ValueError(
          f"{fn}: every row of `permutations` must be a permutation of "
          f"0..{num_tiles - 1}; row {bad[0]} is not.")


def jigsaw_tiles(key: jax.Array, images: jax.Array, permutations, *,
                 grid: int = 3, tile_size: Optional[int] = None,
                 jitter: Optional[int] = None,
                 normalize: bool = True) -> tuple[jax.Array, jax.Array]:
  """Shuffled jigsaw tiles and the index of the permutation that shuffled them.

  The image is divided into a grid × grid layout of cells (side H // grid by
  W // grid, centred; cells numbered row-major 0..grid²−1). From each cell a
  square tile of side t = `tile_size` is cropped at a random position inside
  the cell; the free cell − t pixels are the gap that keeps neighbouring
  tiles from sharing edges. For label l (uniform over the P permutations),

      tiles[b, i] = tile number permutations[l, i] of images[b],

  so tile j of the image goes back to position j with the inverse
  permutation. With `normalize` each tile is standardised per channel,
  (x − mean) / sqrt(var + 1e-6) over its t × t pixels, as in the paper.

  Args:
    key: a PRNG key; example b uses `jax.random.split(key, B)[b]`.
    images: float [B, H, W, C] images, C in {1, 3}.
    permutations: integer [P, grid²] rows of `permutation_set` (numpy or
      jax array).
    grid: tiles per side (3 in the paper).
    tile_size: t <= min cell side; default cell · 64 // 75, the paper's 64
      of 75 pixels.
    jitter: None (default, the paper): a tile's position is uniform over its
      whole cell. An int j <= (cell − t) // 2: uniform within ±j pixels of
      the cell's centre (0: centred tiles, no randomness in position).
    normalize: standardise each tile (default True).

  Returns:
    (tiles [B, grid², t, t, C] in the compute dtype, labels [B] int32 in
    0..P−1, indices into `permutations`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> perms = permutation_set(10)
    >>> x = jax.random.uniform(jax.random.key(0), (2, 30, 30, 3))
    >>> tiles, labels = jigsaw_tiles(jax.random.key(1), x, perms)
    >>> print(tiles.shape, labels.shape)
    (2, 9, 8, 8, 3) (2,)
  """
  fn = "jigsaw_tiles"
  _images.check_images(images, fn)
  cells = _images.layout(np.shape(images), grid, fn)
  num_tiles = grid * grid
  _check_permutations(permutations, num_tiles, fn)
  side = min(cells.cell_h, cells.cell_w)
  if tile_size is None:
    tile_size = max(1, side * _TILE_RATIO[0] // _TILE_RATIO[1])
  _images.check_size(tile_size, side, "tile_size", fn)
  room = (cells.cell_h - tile_size, cells.cell_w - tile_size)
  _images.check_jitter(jitter, min(room), fn)
  images = _common.to_compute(images)
  permutations = jnp.asarray(permutations, jnp.int32)
  rows, cols = np.divmod(np.arange(num_tiles), grid)
  tops = jnp.asarray(cells.top + rows * cells.cell_h, jnp.int32)
  lefts = jnp.asarray(cells.left + cols * cells.cell_w, jnp.int32)

  # Per example: the label, then (dy, dx) for each tile.
  low, high = _images.offset_bounds(num_tiles, room, jitter)
  low = np.concatenate([[0], low.ravel()])
  high = np.concatenate([[permutations.shape[0]], high.ravel()])

  def one(key, image):
    draws = _images.draw_ints(key, low, high)
    label, shift = draws[0], draws[1:].reshape(num_tiles, 2)
    tiles = jax.vmap(_images.crop, (None, 0, 0, None))(
        image, tops + shift[:, 0], lefts + shift[:, 1], tile_size)
    return tiles[permutations[label]], label

  tiles, labels = _images.per_example(one, key, images)
  return (_images.standardize(tiles) if normalize else tiles), labels
