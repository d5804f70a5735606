"""CIE Lab colour and the quantised ab targets of colourisation.

Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016: a network
sees the lightness L of an image and predicts, per pixel, a distribution over
Q quantised ab colours (313 in-gamut bins of a 10 × 10 grid), trained with
cross-entropy against soft-encoded targets (`encode_ab`) and decoded with
the annealed mean (`decode_ab`).

Colour conversion is sRGB (IEC 61966-2-1, D65) to CIE 1976 L*a*b* with the
exact formulas:

    linear    c_lin = c / 12.92                   if c <= 0.04045
                      ((c + 0.055) / 1.055)^2.4   otherwise
    XYZ       M · (r, g, b)_lin                   (sRGB primaries, D65)
    f(t)      t^(1/3)                             if t > δ³,  δ = 6/29
              t / (3δ²) + 4/29                    otherwise
    L* = 116 f(Y/Yn) − 16,  a* = 500 (f(X/Xn) − f(Y/Yn)),
    b* = 200 (f(Y/Yn) − f(Z/Zn))

with white (Xn, Yn, Zn) = (0.95047, 1, 1.08883), the XYZ of sRGB white
(the rows of M sum to it), so white is L* = 100, a* = b* = 0. The 3 × 3
products are written as elementwise sums, which are exact in float32 on
every backend (a TPU matmul would round its inputs to bfloat16).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common

__all__ = ["rgb_to_lab", "lab_to_rgb", "ab_bins", "encode_ab", "decode_ab"]

# sRGB (linear) -> XYZ for the D65 white, as tabulated by B. Lindbloom.
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
XYZ_TO_SRGB = np.linalg.inv(SRGB_TO_XYZ)
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0
# Breakpoints of the sRGB transfer function: encoded and linear values.
_SRGB_KNEE = 0.04045
_LINEAR_KNEE = 0.0031308


def _matvec(matrix, x):
  """matrix · x over the last axis, as an elementwise sum (exact float32)."""
  return (x[..., None, :] * jnp.asarray(matrix, x.dtype)).sum(-1)


# Every power and cube root reads a clamped argument: `where` differentiates
# both branches, and a power of a negative (or zero) number in the unused one
# would turn the gradient into NaN. The two forward steps take the array
# module `xp` (numpy or jax.numpy) because `ab_bins` evaluates them in numpy.


def _srgb_to_linear(c, xp):
  power = ((xp.maximum(c, _SRGB_KNEE) + 0.055) / 1.055) ** 2.4
  return xp.where(c <= _SRGB_KNEE, c / 12.92, power)


def _lab_f(t, xp):
  cube_root = xp.cbrt(xp.maximum(t, _DELTA ** 3))
  return xp.where(t > _DELTA ** 3, cube_root, t / (3 * _DELTA ** 2) + 4 / 29)


def _linear_to_srgb(c):
  power = 1.055 * jnp.maximum(c, _LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
  return jnp.where(c <= _LINEAR_KNEE, 12.92 * c, power)


def _lab_f_inverse(t):
  return jnp.where(t > _DELTA, t ** 3, 3 * _DELTA ** 2 * (t - 4 / 29))


def _check_last_axis(x, name: str, fn: str, what: str) -> None:
  if np.ndim(x) < 1 or np.shape(x)[-1] != 3:
    raise ValueError(f"{fn}: {what}; `{name}` must be [..., 3], got shape "
                     f"{np.shape(x)}.")
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"{fn}: `{name}` must be a float array, got "
                     f"{jnp.result_type(x)}.")


def rgb_to_lab(images: jax.Array) -> jax.Array:
  """sRGB in [0, 1] -> CIE L*a*b* (D65), formulas in the module docstring.

  L* is in [0, 100]; for sRGB colours a* lies in about [−86, 98] and b* in
  about [−108, 95].

  Args:
    images: float [..., 3] sRGB values in [0, 1] (e.g. [B, H, W, 3]).

  Returns:
    [..., 3] (L*, a*, b*) in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> red = rgb_to_lab(jnp.array([1.0, 0.0, 0.0]))
    >>> print([round(v, 2) for v in red.tolist()])
    [53.24, 80.09, 67.2]
  """
  _check_last_axis(images, "images", "rgb_to_lab",
                   "colorization needs 3-channel images")
  images = _common.to_compute(images)
  xyz = _matvec(SRGB_TO_XYZ / WHITE_D65[:, None],
                _srgb_to_linear(images, jnp))
  fx, fy, fz = (_lab_f(xyz[..., i], jnp) for i in range(3))
  return jnp.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jax.Array) -> jax.Array:
  """CIE L*a*b* (D65) -> sRGB in [0, 1], the inverse of `rgb_to_lab`.

      fy = (L* + 16) / 116,  fx = fy + a*/500,  fz = fy − b*/200
      (X, Y, Z) = (Xn, Yn, Zn) · f⁻¹(fx, fy, fz),
      f⁻¹(t) = t³ if t > δ else 3δ² (t − 4/29)
      (r, g, b)_lin = M⁻¹ · (X, Y, Z), clipped to [0, 1], then encoded
      c = 12.92 c_lin if c_lin <= 0.0031308 else 1.055 c_lin^(1/2.4) − 0.055

  Lab colours outside the sRGB gamut (a prediction can be) are clipped in
  linear RGB, so the result is always a valid image.

  Args:
    lab: float [..., 3] (L*, a*, b*).

  Returns:
    [..., 3] sRGB values in [0, 1] in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> white = lab_to_rgb(jnp.array([100.0, 0.0, 0.0]))
    >>> print([round(v, 4) for v in white.tolist()])
    [1.0, 1.0, 1.0]
  """
  _check_last_axis(lab, "lab", "lab_to_rgb", "Lab colours have 3 channels")
  lab = _common.to_compute(lab)
  fy = (lab[..., 0] + 16) / 116
  f = jnp.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
  xyz = _lab_f_inverse(f) * jnp.asarray(WHITE_D65, lab.dtype)
  linear = jnp.clip(_matvec(XYZ_TO_SRGB, xyz), 0.0, 1.0)
  return _linear_to_srgb(linear)


@functools.lru_cache(maxsize=None)
def _in_gamut_bins(grid: int) -> np.ndarray:
  """Read-only [Q, 2] float32 centres of the ab cells that some 8-bit sRGB
  colour falls in.

  The 256³ colours are converted separably: a channel's linear value and its
  share of (X/Xn, Y/Yn, Z/Zn) depend only on its own level, so those are
  tables over 256 levels, and XYZ is a sum of three table entries. Only f
  and the differences run per colour, 65,536 colours (one red level) at a
  time, in float64 so that no colour lands in a cell by rounding.
  """
  linear = _srgb_to_linear(np.arange(256) / 255, np)
  # share[c, level] = level's contribution to (X/Xn, Y/Yn, Z/Zn) via channel c.
  share = linear[None, :, None] * (SRGB_TO_XYZ / WHITE_D65[:, None]).T[:, None]
  # X/Xn, Y/Yn, Z/Zn lie in [0, 1], so f in [4/29, 1] bounds |a*| by
  # 500·25/29 < 432 and |b*| by less.
  offset = 432 // grid + 1
  hit = np.zeros((2 * offset + 1, 2 * offset + 1), bool)
  green_blue = share[1][:, None, :] + share[2][None, :, :]
  for red in share[0]:
    fx, fy, fz = np.moveaxis(_lab_f(red + green_blue, np), -1, 0)
    cell_a = np.round(500 * (fx - fy) / grid).astype(np.int64) + offset
    cell_b = np.round(200 * (fy - fz) / grid).astype(np.int64) + offset
    hit[cell_a, cell_b] = True
  bins = (np.argwhere(hit) - offset).astype(np.float32) * grid
  bins.flags.writeable = False
  return bins


def ab_bins(grid: int = 10) -> np.ndarray:
  """Centres of the in-gamut cells of a `grid`-spaced ab quantisation.

  The ab plane is cut into grid × grid squares centred on multiples of
  `grid` (a cell holds the ab with round(a/grid), round(b/grid) equal to
  its index); a cell is in gamut if some sRGB colour, at any lightness,
  falls in it. The gamut is sampled exactly on all 256³ 8-bit sRGB colours.

  For grid = 10 this gives 261 bins, not the paper's 313 (computed once in
  about a second, then cached). The paper does not say how its 313 were
  found and they are not reproduced by the natural rules; what counts as
  "in gamut" moves the number: cells at the edge hold only a sliver of the
  gamut, so sampling matters (an RGB lattice of 17 levels per channel finds
  255 cells, 65 levels 261, 512 levels 262), and so does the rule (cell
  centres inside the convex hull of the gamut's ab projection: 233; cells
  meeting that hull: 267). The paper's own centres (its `pts_in_hull.npy`)
  can be passed to `encode_ab`/`decode_ab` as `bins` instead. Bins are
  sorted by a, then b.

  Args:
    grid: cell side in ab units (10 in the paper), a positive int.

  Returns:
    [Q, 2] float32 numpy array of (a, b) cell centres (read-only; copy it to
    modify).

  Example:
    >>> bins = ab_bins()
    >>> print(bins.shape, bins.min(axis=0).tolist(), bins.max(axis=0).tolist())
    (261, 2) [-90.0, -110.0] [100.0, 90.0]
  """
  _common.check_count(grid, "grid", "ab_bins", minimum=1)
  return _in_gamut_bins(grid)


def _check_bins(bins, fn: str) -> None:
  _common.check_rank(bins, 2, "bins", fn)
  if np.shape(bins)[1] != 2:
    raise ValueError(f"{fn}: `bins` must be [Q, 2] ab centres, got shape "
                     f"{np.shape(bins)}.")


def encode_ab(ab: jax.Array, bins, *, sigma: float = 5.0,
              neighbours: int = 5) -> jax.Array:
  """Soft-encoded colour targets Z (Zhang et al., section 2.1).

  Each ab value spreads its mass over its `neighbours` nearest bins with a
  Gaussian kernel on the distance,

      Z_q = exp(−‖ab − bin_q‖² / 2σ²)
            / Σ_{q' in N(ab)} exp(−‖ab − bin_q'‖² / 2σ²)

  for q in the nearest-neighbour set N(ab) and 0 elsewhere (each row sums
  to 1; ties at equal distance go to the lower bin index). Normalising
  inside the set (a softmax of −d²/2σ²) keeps targets finite for ab far
  from every bin.

  Args:
    ab: float [..., 2] (a*, b*) values, e.g. `rgb_to_lab(x)[..., 1:]`.
    bins: [Q, 2] bin centres from `ab_bins`.
    sigma: kernel width in ab units, > 0 (5 in the paper).
    neighbours: k, 1 <= k <= Q (5 in the paper).

  Returns:
    [..., Q] soft targets in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> z = encode_ab(jnp.array([[0.0, 0.0]]), ab_bins())
    >>> print(z.shape, round(float(z.sum()), 4), int((z > 0).sum()))
    (1, 261) 1.0 5
  """
  fn = "encode_ab"
  if np.ndim(ab) < 1 or np.shape(ab)[-1] != 2:
    raise ValueError(f"{fn}: `ab` must be [..., 2] (a*, b*) values, got shape "
                     f"{np.shape(ab)}.")
  _check_bins(bins, fn)
  _common.check_positive(sigma, "sigma", fn)
  _common.check_count(neighbours, "neighbours", fn, minimum=1)
  num_bins = np.shape(bins)[0]
  if neighbours > num_bins:
    raise ValueError(f"{fn}: `neighbours` must be <= the {num_bins} bins, got "
                     f"{neighbours}.")
  ab = _common.to_compute(ab)
  centres = jnp.asarray(bins, ab.dtype)
  sq_dist = jnp.sum(jnp.square(ab[..., None, :] - centres), axis=-1)
  neg_dist, nearest = jax.lax.top_k(-sq_dist, neighbours)
  weights = jax.nn.softmax(neg_dist / (2 * sigma ** 2), axis=-1)
  return jnp.put_along_axis(jnp.zeros_like(sq_dist), nearest, weights,
                            axis=-1, inplace=False)


def decode_ab(logits: jax.Array, bins, *,
              temperature: float = 0.38) -> jax.Array:
  """Annealed-mean ab from per-bin logits (Zhang et al., section 2.3).

  With z = softmax(logits), the paper re-adjusts the distribution
  f_T(z) = exp(log z / T) / Σ_q exp(log z_q / T) and takes its mean; as
  log z = logits − const, f_T(z) = softmax(logits / T) exactly:

      ab = Σ_q softmax(logits / T)_q · bin_q

  T = 1 is the mean (desaturated), T → 0 the mode (can be spatially
  inconsistent); the paper's T = 0.38 sits between.

  Args:
    logits: [..., Q] unnormalised scores over the bins.
    bins: [Q, 2] bin centres from `ab_bins`.
    temperature: T > 0.

  Returns:
    [..., 2] (a*, b*) in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> bins = jnp.array([[0.0, 0.0], [10.0, -20.0]])
    >>> print(decode_ab(jnp.array([0.0, 0.0]), bins, temperature=1.0).tolist())
    [5.0, -10.0]
  """
  fn = "decode_ab"
  _check_bins(bins, fn)
  _common.check_positive(temperature, "temperature", fn)
  num_bins = np.shape(bins)[0]
  if np.ndim(logits) < 1 or np.shape(logits)[-1] != num_bins:
    raise ValueError(f"{fn}: `logits` must be [..., Q] with Q = {num_bins} "
                     f"bins, got shape {np.shape(logits)}.")
  logits = _common.to_compute(logits)
  probs = jax.nn.softmax(logits / temperature, axis=-1)
  return _matvec(jnp.asarray(bins).T, probs)
