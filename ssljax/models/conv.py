"""2-D convolutions whose backward pass is fast on a CPU.

XLA:CPU runs a stride-1 forward convolution through a fast kernel, but the
convolutions that autodiff writes for the backward pass miss it: the weight
gradient is a convolution whose "kernel" is the whole output gradient, and
the input gradient of a strided convolution dilates its input (a
`lhs_dilation`), and both fall onto generic loops (4-9× the forward's time).
On a CPU these functions therefore run their own vector-Jacobian product,
written as the operations XLA:CPU does fast:

* weight gradient: dW = Σ patches(x)ᵀ · dy, im2col matrix products over
  tiles of a few images (`lax.scan`), so that the patches of one tile stay in
  cache instead of a [B·H·W, k·k·C] matrix in memory;
* input gradient: the transposed convolution, dx = conv(dy ↑ s, flip(W)ᵀ); a
  dilated (↑ s) input is split into s² phases, each a stride-1 convolution
  of dy with the taps of one phase (the sub-pixel decomposition of a
  transposed convolution, Shi et al. 2016, "Is the deconvolution layer the
  same as a convolutional layer?");
* strided forward convolutions as im2col matrix products over tiles, stride
  1 through XLA's own convolution.

On every other platform `lax.platform_dependent` keeps XLA's convolution and
its autodiff untouched; the choice is made when the computation is lowered.
Values and gradients equal `lax.conv_general_dilated`'s to float32 rounding.
Only first-order reverse mode is fused: forward-mode (`jax.jvp`, hence
`jax.hessian`) raises a `TypeError` on a CPU.

Layouts are NHWC for images and HWIO for kernels, Flax's. `Conv` and
`ConvTranspose` are drop-ins for `nnx.Conv` and `nnx.ConvTranspose` with the
same parameters ("kernel" [kh, kw, in, out], optional "bias" [out]), drawn
from `rngs` in the same order, so checkpoints and parameter trees do not
change.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from jax import lax

from ssljax._common import check_rank

Dtype = Any
Padding = Union[str, int, Sequence[tuple[int, int]]]
Pairs = tuple[tuple[int, int], tuple[int, int]]

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Output positions of one im2col tile. 2,048 rows × k·k·C columns of
# float32 (4.7 MB for a 3×3 kernel over 64 channels) was the fastest tile
# for ResNet-18's layers on a 2-core CPU; see benchmarks/vs_torch.py --conv.
TILE_ROWS = 2048


# ------------------------------------------------------------ arguments ---


def _int_pair(value, name: str, fn: str) -> tuple[int, int]:
  """An int or a pair of ints, each >= 1."""
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
    raise ValueError(f"{fn}: `{name}` must be an int >= 1 or a pair of them, "
                     f"got {value!r}.")
  return pair


def _padding_pairs(padding: Padding, fn: str) -> Optional[Pairs]:
  """Explicit ((top, bottom), (left, right)) padding, or None for a string."""
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"{fn}: `padding` must be 'SAME', 'VALID', an int or "
                       f"two (low, high) pairs, got {padding!r}.")
    return None
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  pairs = tuple(tuple(p) for p in padding)
  if len(pairs) != 2 or any(len(p) != 2 for p in pairs):
    raise ValueError(f"{fn}: `padding` must be 'SAME', 'VALID', an int or "
                     f"two (low, high) pairs, got {padding!r}.")
  return tuple((int(lo), int(hi)) for lo, hi in pairs)


def _check_operands(x, kernel, fn: str) -> None:
  check_rank(x, 4, "x", fn)
  check_rank(kernel, 4, "kernel", fn)
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(
        f"{fn}: `kernel` [kh, kw, in, out] must have in = {x.shape[-1]} (the "
        f"channels of `x` {x.shape}), got shape {kernel.shape}.")


# -------------------------------------------------- the CPU formulation ---


def _pad(x: jax.Array, padding) -> jax.Array:
  """Zero-pads (or, for negative amounts, crops) the spatial axes of NHWC x."""
  config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)]
  return lax.pad(x, jnp.zeros((), x.dtype), config)


def _flip(kernel: jax.Array) -> jax.Array:
  """[kh, kw, in, out] -> kernel rotated by 180° as [kh, kw, out, in]."""
  return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def _patches(x: jax.Array, window, strides, pad_low, out_hw) -> jax.Array:
  """im2col: [N, oh, ow, kh·kw·C], column (i, j, c) = x_pad[s·o + (i, j), c].

  The high padding is whatever the last window needs (a crop if negative).
  """
  extent = [s * (o - 1) + k for s, o, k in zip(strides, out_hw, window)]
  padding = [(lo, e - n - lo) for lo, e, n in zip(pad_low, extent, x.shape[1:3])]
  xp = _pad(x, padding)
  (sh, sw), (oh, ow) = strides, out_hw
  taps = [xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
          for i in range(window[0]) for j in range(window[1])]
  return jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]


def _tile_images(batch: int, rows_per_image: int) -> int:
  """Images per tile: the largest divisor of `batch` within TILE_ROWS rows."""
  fits = max(1, TILE_ROWS // rows_per_image)
  return max(d for d in range(1, min(batch, fits) + 1) if batch % d == 0)


def _in_tiles(x: jax.Array, rows_per_image: int) -> jax.Array:
  """[N, ...] -> [N / b, b, ...] with b images per tile."""
  b = _tile_images(x.shape[0], rows_per_image)
  return x.reshape(x.shape[0] // b, b, *x.shape[1:])


def _matmul_conv(x, kernel, strides, padding, out_hw) -> jax.Array:
  """y = patches(x) · W, one tile of images at a time (`lax.map`)."""
  kh, kw, c, o = kernel.shape
  w = kernel.reshape(kh * kw * c, o)
  low = [lo for lo, _ in padding]

  def tile(xs):
    cols = _patches(xs, (kh, kw), strides, low, out_hw)
    return jnp.dot(cols, w, preferred_element_type=_accumulator(x.dtype))

  y = lax.map(tile, _in_tiles(x, out_hw[0] * out_hw[1]))
  return y.reshape(x.shape[0], *out_hw, o).astype(x.dtype)


def _accumulator(dtype) -> jnp.dtype:
  """float32 for half/bfloat16 products, float64 stays float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _eigen_conv(x, kernel, padding) -> jax.Array:
  """Stride-1 convolution through XLA:CPU's Eigen kernel.

  XLA:CPU hands float32 NHWC convolutions to YNNPACK, which ran ResNet
  layers about 2× slower than Eigen's kernel, but declines those whose
  output is taller than their input: the bottom padding is grown until it
  is (one row for "same" padding, +3% work) and the extra rows cropped.
  """
  x = _pad(x, [(min(lo, 0), min(hi, 0)) for lo, hi in padding])
  (top, bottom), (left, right) = [(max(lo, 0), max(hi, 0))
                                  for lo, hi in padding]
  out_h = x.shape[1] + top + bottom - kernel.shape[0] + 1
  grow = max(0, x.shape[1] - out_h + 1)
  y = lax.conv_general_dilated(
      x, kernel, (1, 1), ((top, bottom + grow), (left, right)),
      dimension_numbers=_DIMENSIONS,
      preferred_element_type=_accumulator(x.dtype))
  return y[:, :out_h].astype(x.dtype)


def _strided_conv(x, kernel, strides, padding) -> jax.Array:
  """Forward convolution (no input dilation), the fastest way on a CPU."""
  if strides == (1, 1):
    return _eigen_conv(x, kernel, padding)
  out_hw = tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
                 zip(x.shape[1:3], padding, kernel.shape[:2], strides))
  return _matmul_conv(x, kernel, strides, padding, out_hw)


def _phase(n: int, k: int, d: int, padding, q: int, r: int):
  """Taps and input padding of output phase r of a d-dilated 1-D conv.

  y[d·q' + r] = Σ_m x[q' + m + c] · w[k0 + d·m] with k0 ≡ low − r (mod d)
  and c = (r + k0 − low) / d: a stride-1 convolution with the taps
  w[k0::d], over x padded by (−c, ...) to give q outputs.
  """
  low = padding[0]
  k0 = (low - r) % d
  taps = len(range(k0, k, d))
  c = (r + k0 - low) // d
  return slice(k0, None, d), taps, (-c, q + taps - 1 - n + c)


def _dilated_conv(x, kernel, dilation, padding) -> jax.Array:
  """Stride-1 convolution of x dilated by `dilation`, by phases.

  Output position (d_h·q + r, d_w·p + t) only meets the taps of phase
  (r, t), so the d_h·d_w phases are stride-1 convolutions of x with those
  taps, interleaved; the zeros of the dilated input are never multiplied.
  """
  n, out_c = x.shape[0], kernel.shape[3]
  out_hw = [d * (size - 1) + 1 + lo + hi - k + 1 for size, (lo, hi), k, d in
            zip(x.shape[1:3], padding, kernel.shape[:2], dilation)]
  q = [-(-o // d) for o, d in zip(out_hw, dilation)]
  axes = [[_phase(size, k, d, p, qa, r) for r in range(d)]
          for size, k, d, p, qa in
          zip(x.shape[1:3], kernel.shape[:2], dilation, padding, q)]
  rows = []
  for taps_h, count_h, pad_h in axes[0]:
    row = []
    for taps_w, count_w, pad_w in axes[1]:
      if count_h and count_w:
        row.append(_strided_conv(x, kernel[taps_h, taps_w], (1, 1),
                                 (pad_h, pad_w)))
      else:
        row.append(jnp.zeros((n, q[0], q[1], out_c), x.dtype))
    rows.append(jnp.stack(row, axis=3))
  y = jnp.stack(rows, axis=2).reshape(n, q[0] * dilation[0],
                                      q[1] * dilation[1], out_c)
  return y[:, :out_hw[0], :out_hw[1]]


def _patch_products(a, b, window, strides, pad_low) -> jax.Array:
  """Σ over images and positions of patches(a) ⊗ b: [kh, kw, Ca, Cb].

  Accumulated over tiles of images (`lax.fori_loop`), so the im2col matrix
  of one tile stays in cache. The first tile starts the sum, so that inside
  `shard_map` it varies over the same devices as the data.
  """
  out_hw = b.shape[1:3]
  rows = out_hw[0] * out_hw[1]
  a_tiles, b_tiles = _in_tiles(a, rows), _in_tiles(b, rows)

  def product(i):
    cols = _patches(a_tiles[i], window, strides, pad_low, out_hw)
    return lax.dot_general(cols, b_tiles[i], (((0, 1, 2), (0, 1, 2)), ((), ())),
                           preferred_element_type=_accumulator(a.dtype))

  total = lax.fori_loop(1, a_tiles.shape[0], lambda i, s: s + product(i),
                        product(0))
  return total.reshape(*window, a.shape[3], b.shape[3])


def _weight_grad(x, dy, window, strides, dilation, padding) -> jax.Array:
  """dL/dW of `_cpu_conv` (one of `strides`, `dilation` is (1, 1)).

  Undilated: dW[i, j] = Σ x_pad[s·o + (i, j)] ⊗ dy[o]. Dilated by d (stride
  1), only x[u] at d·u + low is non-zero, so dW[i, j] = Σ_u x[u] ⊗
  dy_pad[d·u + k − 1 − (i, j)] with dy padded by k − 1 − low: patches of dy
  taken at stride d, against x, with the taps reversed.
  """
  if dilation == (1, 1):
    return _patch_products(x, dy, window, strides, [lo for lo, _ in padding])
  low = [k - 1 - lo for k, (lo, _) in zip(window, padding)]
  return _flip(_patch_products(dy, x, window, dilation, low))


def _input_grad_padding(in_hw, window, strides, dilation, padding, out_hw):
  """Padding of the transposed convolution that gives dL/dx."""
  pairs = []
  for n, k, s, d, (lo, _), o in zip(in_hw, window, strides, dilation,
                                    padding, out_hw):
    low = k - 1 - lo
    pairs.append((low, d * (n - 1) + k - s * (o - 1) - 1 - low))
  return tuple(pairs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _cpu_conv(x, kernel, strides, dilation, padding) -> jax.Array:
  """Convolution of x dilated by `dilation` at `strides` (one is (1, 1))."""
  if dilation == (1, 1):
    return _strided_conv(x, kernel, strides, padding)
  return _dilated_conv(x, kernel, dilation, padding)


def _cpu_conv_fwd(x, kernel, strides, dilation, padding):
  return _cpu_conv(x, kernel, strides, dilation, padding), (x, kernel)


def _cpu_conv_bwd(strides, dilation, padding, residuals, dy):
  x, kernel = residuals
  window = kernel.shape[:2]
  # The transpose of a convolution swaps the roles of strides and dilation.
  dx = _cpu_conv(dy, _flip(kernel), dilation, strides,
                 _input_grad_padding(x.shape[1:3], window, strides, dilation,
                                     padding, dy.shape[1:3]))
  dw = _weight_grad(x, dy, window, strides, dilation, padding)
  return dx, dw.astype(kernel.dtype)


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


# Jitted so that eager calls (a model's `init`, tests) compile the whole
# convolution once per shape instead of dispatching its many small ops one by
# one; under an outer `jit` it is inlined.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv(x, kernel, strides, dilation, padding) -> jax.Array:
  """Ours on a CPU, XLA's `conv_general_dilated` elsewhere (at lowering)."""
  def xla(x, kernel):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    lhs_dilation=dilation,
                                    dimension_numbers=_DIMENSIONS)

  def cpu(x, kernel):
    # The custom VJP needs both operands to vary over the same devices
    # inside `shard_map` (XLA's primitives cast implicitly): adding a zero
    # of the other's type does it, and compiles away.
    x, kernel = (x + jnp.zeros_like(kernel, shape=()),
                 kernel + jnp.zeros_like(x, shape=()))
    return _cpu_conv(x, kernel, strides, dilation, padding)

  return lax.platform_dependent(x, kernel, cpu=cpu, default=xla)


# --------------------------------------------------------------- public ---


def conv2d(x: jax.Array, kernel: jax.Array, *, strides=1,
           padding: Padding = "VALID") -> jax.Array:
  """2-D cross-correlation, `lax.conv_general_dilated` with a fast CPU VJP.

  y[n, o_h, o_w, f] = Σ_{i, j, c} x_pad[n, s_h·o_h + i, s_w·o_w + j, c] ·
  W[i, j, c, f], with x_pad zero-padded by `padding`. On a CPU the
  gradients are im2col products and phase convolutions (module docstring);
  elsewhere XLA's convolution and its autodiff.

  Args:
    x: images [N, H, W, C].
    kernel: [kh, kw, C, F] (HWIO).
    strides: an int or (s_h, s_w).
    padding: "VALID", "SAME" (TensorFlow's, asymmetric for even excess), an
      int p for (p, p) on both axes, or ((top, bottom), (left, right)).

  Returns:
    [N, H', W', F] in the promoted dtype of `x` and `kernel`.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.ones((1, 4, 4, 1))
    >>> y = conv2d(x, jnp.ones((3, 3, 1, 2)), strides=2, padding=1)
    >>> print(y.shape, y[0, :, :, 0].tolist())
    (1, 2, 2, 2) [[4.0, 6.0], [6.0, 9.0]]
  """
  fn = "conv2d"
  _check_operands(x, kernel, fn)
  strides = _int_pair(strides, "strides", fn)
  pairs = _padding_pairs(padding, fn)
  if pairs is None:
    pairs = tuple(lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2],
                                      strides, padding))
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)
  dtype = jnp.promote_types(x.dtype, kernel.dtype)
  return _conv(x.astype(dtype), kernel.astype(dtype), strides, (1, 1), pairs)


def transpose_padding(window: Sequence[int], strides: Sequence[int],
                      padding: Padding) -> Pairs:
  """Padding of the dilated input that `lax.conv_transpose` applies.

  "SAME" makes the output s times the input: (a, k + s − 2 − a) with a =
  k − 1 if s > k − 1 else ceil((k + s − 2) / 2); "VALID" gives (k − 1,
  k − 1 + max(s − k, 0)); explicit pairs are used as given.

  >>> transpose_padding((4, 4), (2, 2), "SAME")
  ((2, 2), (2, 2))
  """
  pairs = _padding_pairs(padding, "transpose_padding")
  if pairs is not None:
    return pairs
  out = []
  for k, s in zip(window, strides):
    if padding == "SAME":
      total = k + s - 2
      low = k - 1 if s > k - 1 else -(-total // 2)
    else:
      total, low = k + s - 2 + max(k - s, 0), k - 1
    out.append((low, total - low))
  return tuple(out)


def conv_transpose2d(x: jax.Array, kernel: jax.Array, *, strides=1,
                     padding: Padding = "SAME") -> jax.Array:
  """`lax.conv_transpose` (kernel not flipped) with a fast CPU path.

  The input is dilated by the strides (s − 1 zeros between pixels), padded
  (`transpose_padding`) and cross-correlated with `kernel` at stride 1,
  which on a CPU runs as s_h·s_w phase convolutions that skip the zeros.

  Args:
    x: [N, H, W, C].
    kernel: [kh, kw, C, F] (HWIO).
    strides: an int or (s_h, s_w), the upsampling factors.
    padding: "SAME" (output s·H × s·W), "VALID", or ((top, bottom), (left,
      right)) padding of the dilated input.

  Returns:
    [N, H', W', F].

  Example:
    >>> import jax.numpy as jnp
    >>> y = conv_transpose2d(jnp.ones((1, 2, 2, 1)), jnp.ones((4, 4, 1, 1)),
    ...                      strides=2)
    >>> print(y.shape, y[0, :, :, 0].tolist())
    (1, 4, 4, 1) [[1.0, 2.0, 2.0, 1.0], [2.0, 4.0, 4.0, 2.0], [2.0, 4.0, 4.0, 2.0], [1.0, 2.0, 2.0, 1.0]]
  """
  fn = "conv_transpose2d"
  _check_operands(x, kernel, fn)
  strides = _int_pair(strides, "strides", fn)
  pairs = transpose_padding(kernel.shape[:2], strides, padding)
  x, kernel = jnp.asarray(x), jnp.asarray(kernel)
  dtype = jnp.promote_types(x.dtype, kernel.dtype)
  return _conv(x.astype(dtype), kernel.astype(dtype), (1, 1), strides, pairs)


# -------------------------------------------------------------- modules ---


class _ConvModule(nnx.Module):
  """Parameters and dtype handling shared by `Conv` and `ConvTranspose`,
  which name the operation they apply (`_op`)."""

  _op: Callable

  def __init__(self, in_features: int, out_features: int,
               kernel_size: Union[int, Sequence[int]], *, strides=1,
               padding: Padding = "SAME", use_bias: bool = True,
               kernel_init: Callable = nnx.initializers.lecun_normal(),
               bias_init: Callable = nnx.initializers.zeros_init(),
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    fn = type(self).__name__
    self.kernel_size = _int_pair(kernel_size, "kernel_size", fn)
    self.strides = _int_pair(strides, "strides", fn)
    _padding_pairs(padding, fn)
    self.padding = padding
    self.dtype = dtype
    # Keys drawn in nnx.Conv's order (kernel, then bias): same values.
    self.kernel = nnx.Param(kernel_init(
        rngs.params(), (*self.kernel_size, in_features, out_features),
        param_dtype))
    self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,),
                                     param_dtype)) if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    bias = None if self.bias is None else self.bias[...]
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], bias), dtype=self.dtype)
    y = type(self)._op(x, kernel, strides=self.strides, padding=self.padding)
    return y if bias is None else y + bias


class Conv(_ConvModule):
  """`nnx.Conv` for NHWC images through `conv2d`: same parameters and values.

  Args:
    in_features, out_features: channels in and out.
    kernel_size: an int or (kh, kw).
    strides: an int or (s_h, s_w).
    padding: as in `conv2d`; "SAME" by default, as `nnx.Conv`.
    use_bias: add a learned bias [out_features].
    kernel_init, bias_init: initialisers (nnx.Conv's defaults).
    dtype: computation dtype (None: promoted from input and parameters).
    param_dtype: dtype of the parameters.
    rngs: `nnx.Rngs` with a "params" stream.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> conv = Conv(3, 8, 3, strides=2, padding=1, rngs=nnx.Rngs(0))
    >>> print(conv(jnp.ones((2, 32, 32, 3))).shape, conv.kernel.shape)
    (2, 16, 16, 8) (3, 3, 3, 8)
  """

  _op = staticmethod(conv2d)


class ConvTranspose(_ConvModule):
  """`nnx.ConvTranspose` (kernel not flipped) through `conv_transpose2d`.

  Arguments as in `Conv`; `strides` are the upsampling factors and "SAME"
  padding makes the output `strides` times the input.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> up = ConvTranspose(8, 4, 4, strides=2, use_bias=False,
    ...                    rngs=nnx.Rngs(0))
    >>> print(up(jnp.ones((2, 7, 7, 8))).shape)
    (2, 14, 14, 4)
  """

  _op = staticmethod(conv_transpose2d)
