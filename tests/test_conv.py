"""Tests of ssljax.models.conv against XLA's convolution and numpy.

The CPU path (im2col weight gradients, phase-split transposed convolutions)
must give `lax.conv_general_dilated`'s values and gradients to float32
rounding for every kernel, stride and padding the models use, under `jit`,
`vmap`, `shard_map` and a batch sharded over 8 devices; other platforms must
lower to XLA's own convolution.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssljax.models import conv
from ssljax.models.conv import (Conv, ConvTranspose, conv2d, conv_transpose2d,
                                transpose_padding)

DIMS = ("NHWC", "HWIO", "NHWC")
RTOL = 1e-5

# (kernel, stride, padding, height, width): the models' cases (k // 2
# "PyTorch" padding at strides 1 and 2, 1×1 shortcuts, the 7×7 stem, ViT's
# VALID patches) and odd sizes, asymmetric and "SAME" padding.
CASES = [
    (3, 1, 1, 8, 8), (3, 2, 1, 8, 8), (3, 2, 1, 7, 9), (1, 1, 0, 5, 5),
    (1, 2, 0, 8, 7), (7, 2, 3, 11, 11), (4, 4, "VALID", 8, 8),
    (3, 1, ((2, 0), (1, 1)), 6, 5), (2, 2, "SAME", 7, 7),
    (3, 2, "SAME", 8, 8), (3, 1, "VALID", 6, 6),
]


def _reference(x, w, stride, padding):
  if isinstance(padding, int):
    padding = ((padding, padding),) * 2
  return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                  dimension_numbers=DIMS,
                                  precision=lax.Precision.HIGHEST)


def _operands(shape_x, shape_w, dtype=jnp.float32):
  kx, kw = jax.random.split(jax.random.key(0))
  return (jax.random.normal(kx, shape_x, dtype),
          jax.random.normal(kw, shape_w, dtype))


def _close(actual, expected, rtol=RTOL):
  """Equal up to rtol of the largest magnitude (sums cancel elementwise)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected,
                                                                np.float64)
  assert actual.shape == expected.shape
  scale = np.abs(expected).max()
  np.testing.assert_allclose(actual, expected, atol=rtol * scale, rtol=0)


def _value_and_grads(fn, x, w, cotangent_key=2):
  y, vjp = jax.vjp(fn, x, w)
  dy = jax.random.normal(jax.random.key(cotangent_key), y.shape).astype(
      y.dtype)
  return (y, *vjp(dy))


# ------------------------------------------------------------- conv2d ---


def test_conv2d_matches_numpy_by_hand():
  # Two output pixels of a stride-2, pad-1 3×3 sum of ones: the corner sees
  # a 2×2 window, the interior a full 3×3 one.
  x = np.arange(2 * 5 * 5 * 2, dtype=np.float32).reshape(2, 5, 5, 2)
  w = np.random.default_rng(0).normal(size=(3, 3, 2, 3)).astype(np.float32)
  y = np.asarray(jax.jit(functools.partial(conv2d, strides=2,
                                           padding=1))(x, w))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.einsum("nijc,ijco->no", xp[:, 2:5, 2:5], w)
  np.testing.assert_allclose(y[:, 1, 1], want, rtol=1e-5)
  assert y.shape == (2, 3, 3, 3)


@pytest.mark.parametrize("k, stride, padding, h, w", CASES)
def test_conv2d_values_and_gradients_match_xla(k, stride, padding, h, w):
  x, kernel = _operands((3, h, w, 4), (k, k, 4, 5))
  ours = jax.jit(lambda x, w: _value_and_grads(
      lambda x, w: conv2d(x, w, strides=stride, padding=padding), x, w))
  ref = _value_and_grads(lambda x, w: _reference(x, w, stride, padding), x,
                         kernel)
  for a, b in zip(ours(x, kernel), ref):
    _close(a, b)


def test_weight_gradient_over_many_tiles(monkeypatch):
  # Tiles of one 4×4 map: the scan accumulates 6 tiles (batch 6 has the
  # divisors 1, 2, 3, 6; 16 rows fit one image).
  monkeypatch.setattr(conv, "TILE_ROWS", 16)
  x, kernel = _operands((6, 8, 8, 3), (3, 3, 3, 4))
  ours = jax.jit(lambda x, w: _value_and_grads(
      lambda x, w: conv2d(x, w, strides=2, padding=1), x, w))
  ref = _value_and_grads(lambda x, w: _reference(x, w, 2, 1), x, kernel)
  for a, b in zip(ours(x, kernel), ref):
    _close(a, b)


def test_tile_images_divides_the_batch():
  assert conv._tile_images(256, 1024) == 2
  assert conv._tile_images(7, 16) == 7
  assert conv._tile_images(6, 700) == 2  # 3 would exceed 2048 rows.
  assert conv._tile_images(5, 4096) == 1


def test_bfloat16_matches_float32_reference_rounded():
  x, kernel = _operands((4, 8, 8, 8), (3, 3, 8, 8))
  xb, wb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  outs = jax.jit(lambda x, w: _value_and_grads(
      lambda x, w: conv2d(x, w, strides=2, padding=1), x, w))(xb, wb)
  # Reference: the same bf16 numbers in float32, rounded at the end.
  refs = _value_and_grads(lambda x, w: _reference(x, w, 2, 1),
                          xb.astype(jnp.float32), wb.astype(jnp.float32))
  for out, ref in zip(outs, refs):
    assert out.dtype == jnp.bfloat16
    _close(out, ref.astype(jnp.bfloat16), rtol=1e-2)


def test_mixed_dtypes_are_promoted():
  x, kernel = _operands((2, 6, 6, 3), (3, 3, 3, 2))
  y = conv2d(x.astype(jnp.bfloat16), kernel, padding=1)
  assert y.dtype == jnp.float32
  _close(y, _reference(x.astype(jnp.bfloat16).astype(jnp.float32), kernel,
                       1, 1))


def test_vmap_over_a_leading_axis():
  x, kernel = _operands((3, 2, 8, 8, 4), (3, 3, 4, 5))
  kernels = jnp.stack([kernel, 2 * kernel, -kernel])

  def grads(x, w):
    return jax.grad(lambda x, w: jnp.sum(
        conv2d(x, w, strides=2, padding=1) ** 2), (0, 1))(x, w)

  dx, dw = jax.jit(jax.vmap(grads))(x, kernels)
  for i in range(3):
    rx, rw = jax.grad(lambda x, w: jnp.sum(_reference(x, w, 2, 1) ** 2),
                      (0, 1))(x[i], kernels[i])
    _close(dx[i], rx)
    _close(dw[i], rw)


def _loss(fn, x, w):
  return jnp.sum(jnp.tanh(fn(x, w)))


def test_sharded_batch_equals_one_device():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  x, kernel = _operands((16, 8, 8, 4), (3, 3, 4, 6))
  fn = lambda x, w: conv2d(x, w, strides=2, padding=1)  # noqa: E731
  grads = jax.jit(jax.value_and_grad(functools.partial(_loss, fn), (0, 1)))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  ws = jax.device_put(kernel, NamedSharding(mesh, P()))
  sharded, one = grads(xs, ws), grads(x, kernel)
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(one)):
    _close(a, b)


def test_shard_map_equals_one_device():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  x, kernel = _operands((16, 8, 8, 4), (3, 3, 4, 6))
  fn = lambda x, w: conv2d(x, w, strides=2, padding=1)  # noqa: E731

  def per_device(x, w):
    # The replicated kernel's gradient comes back summed over the devices
    # (shard_map's implicit cast of `w` to varying transposes to a psum).
    loss, (dx, dw) = jax.value_and_grad(functools.partial(_loss, fn),
                                        (0, 1))(x, w)
    return loss[None], dx, dw

  mapped = jax.jit(jax.shard_map(per_device, mesh=mesh,
                                 in_specs=(P("data"), P()),
                                 out_specs=(P("data"), P("data"), P())))
  losses, dx, dw = mapped(x, kernel)
  ref_loss, (ref_dx, ref_dw) = jax.value_and_grad(
      functools.partial(_loss, lambda x, w: _reference(x, w, 2, 1)),
      (0, 1))(x, kernel)
  _close(losses.sum(), ref_loss)
  _close(dx, ref_dx)
  _close(dw, ref_dw)


def test_reverse_over_reverse_matches_xla():
  x, kernel = _operands((2, 6, 6, 3), (3, 3, 3, 4))

  def outer(fn):
    inner = jax.grad(lambda w: jnp.sum(jnp.sin(fn(x, w))))
    return jax.grad(lambda w: jnp.sum(inner(w) ** 2))(kernel)

  _close(jax.jit(lambda: outer(
      lambda x, w: conv2d(x, w, strides=2, padding=1)))(),
         outer(lambda x, w: _reference(x, w, 2, 1)))


def test_forward_mode_fails_loudly_on_cpu():
  x, kernel = _operands((2, 6, 6, 3), (3, 3, 3, 4))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(lambda w: conv2d(x, w, padding=1), (kernel,), (kernel,))


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerators_lower_to_xla_convolutions(platform):
  x, kernel = _operands((2, 8, 8, 3), (3, 3, 3, 4))
  grads = jax.grad(lambda x, w: conv2d(x, w, strides=2, padding=1).sum(),
                   (0, 1))
  text = jax.jit(grads).trace(x, kernel).lower(
      lowering_platforms=(platform,)).as_text()
  # XLA's autodiff: one convolution for dx and one for dW, no im2col loop.
  assert text.count("stablehlo.convolution") == 2
  assert "stablehlo.while" not in text and "dot_general" not in text
  cpu = jax.jit(grads).trace(x, kernel).lower(
      lowering_platforms=("cpu",)).as_text()
  assert "dot_general" in cpu  # The im2col weight gradient.


@pytest.mark.parametrize("call, message", [
    (lambda: conv2d(jnp.ones((8, 8, 3)), jnp.ones((3, 3, 3, 4))), "`x`"),
    (lambda: conv2d(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 4))), "`kernel`"),
    (lambda: conv2d(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 2, 4))),
     "in = 3"),
    (lambda: conv2d(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4)),
                    strides=0), "`strides`"),
    (lambda: conv2d(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4)),
                    padding="FULL"), "`padding`"),
    (lambda: conv2d(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4)),
                    padding=((1, 1),)), "`padding`"),
    (lambda: conv_transpose2d(jnp.ones((1, 4, 4, 3)),
                              jnp.ones((4, 4, 2, 4)), strides=2), "in = 3"),
    (lambda: Conv(3, 4, 0, rngs=nnx.Rngs(0)), "`kernel_size`"),
    (lambda: ConvTranspose(3, 4, 4, strides=(2, 2, 2), rngs=nnx.Rngs(0)),
     "`strides`"),
])
def test_bad_arguments_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# --------------------------------------------------- conv_transpose2d ---


@pytest.mark.parametrize("k, stride, padding, h", [
    (4, 2, "SAME", 4), (4, 2, "VALID", 3), (3, 2, "SAME", 5),
    (3, 1, "SAME", 5), (3, 2, ((1, 2), (0, 1)), 4), (2, 3, "SAME", 3)])
def test_conv_transpose2d_matches_lax(k, stride, padding, h):
  x, kernel = _operands((3, h, h, 4), (k, k, 4, 5))
  ours = jax.jit(lambda x, w: _value_and_grads(
      lambda x, w: conv_transpose2d(x, w, strides=stride, padding=padding),
      x, w))
  ref = _value_and_grads(
      lambda x, w: lax.conv_transpose(x, w, (stride, stride), padding,
                                      dimension_numbers=DIMS,
                                      precision=lax.Precision.HIGHEST),
      x, kernel)
  for a, b in zip(ours(x, kernel), ref):
    _close(a, b)


def test_transpose_padding_formula():
  # k = 4, s = 2: "SAME" doubles the size with a = ceil(4 / 2) = 2.
  assert transpose_padding((4, 4), (2, 2), "SAME") == ((2, 2), (2, 2))
  # s > k − 1 pads k − 1 below; "VALID" adds max(s − k, 0) above.
  assert transpose_padding((2, 3), (3, 1), "SAME") == ((1, 2), (1, 1))
  assert transpose_padding((2, 2), (3, 3), "VALID") == ((1, 2), (1, 2))
  assert transpose_padding((3, 3), (2, 2), ((0, 1), (1, 0))) == (
      (0, 1), (1, 0))


# -------------------------------------------------------------- modules ---


@pytest.mark.parametrize("ours, theirs, x_shape", [
    (lambda: Conv(3, 8, 3, strides=2, padding=((1, 1), (1, 1)),
                  rngs=nnx.Rngs(0)),
     lambda: nnx.Conv(3, 8, (3, 3), strides=(2, 2),
                      padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0)),
     (2, 9, 9, 3)),
    (lambda: Conv(3, 8, 4, strides=4, padding="VALID", use_bias=False,
                  dtype=jnp.bfloat16, rngs=nnx.Rngs(1)),
     lambda: nnx.Conv(3, 8, (4, 4), strides=(4, 4), padding="VALID",
                      use_bias=False, dtype=jnp.bfloat16, rngs=nnx.Rngs(1)),
     (2, 8, 8, 3)),
    (lambda: ConvTranspose(8, 4, 4, strides=2, use_bias=False,
                           rngs=nnx.Rngs(2)),
     lambda: nnx.ConvTranspose(8, 4, (4, 4), strides=(2, 2), use_bias=False,
                               rngs=nnx.Rngs(2)),
     (2, 7, 7, 8)),
])
def test_modules_are_drop_ins_for_nnx(ours, theirs, x_shape):
  a, b = ours(), theirs()
  params_a, params_b = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
  assert jax.tree.map(jnp.shape, params_a) == jax.tree.map(jnp.shape,
                                                           params_b)
  for p, q in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(p, q)
  x = jax.random.normal(jax.random.key(3), x_shape)
  ya, yb = a(x), b(x)
  assert ya.dtype == yb.dtype
  _close(ya.astype(jnp.float32), yb.astype(jnp.float32),
         rtol=1e-2 if ya.dtype == jnp.bfloat16 else RTOL)
