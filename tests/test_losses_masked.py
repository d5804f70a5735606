"""ssljax.losses.masked (MAE, iBOT patch, I-JEPA, KoLeo) against numpy loops
of the papers' formulas and the official code's details (unbiased patch
variance, per-image masked means, smooth L1 of LN targets, nearest
neighbour by inner product), their gradients, bf16 inputs, and the 8-device
global view and `shard_map` + `axis_name` against one device."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from ssljax.losses import ibot_patch, ijepa, koleo, mae

RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
  return (scale * RNG.normal(size=shape)).astype(np.float32)


def _mask(*shape, p=0.5):
  return RNG.random(shape) < p


# ------------------------------------------------------ numpy references ---


def ref_mae(pred, target, mask, norm_pix, eps=1e-6):
  total, count = 0.0, 0.0
  for b in range(pred.shape[0]):
    for n in range(pred.shape[1]):
      t = np.float64(target[b, n])
      if norm_pix:
        mean = sum(t) / len(t)
        var = sum((v - mean) ** 2 for v in t) / (len(t) - 1)  # torch .var
        t = (t - mean) / math.sqrt(var + eps)
      error = sum((x - y) ** 2 for x, y in zip(pred[b, n], t)) / len(t)
      total += mask[b, n] * error
      count += mask[b, n]
  return total / count


def ref_softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def ref_ibot_patch(s, t, c, mask, ts, tt):
  per_image = []
  for v in range(s.shape[0]):
    for b in range(s.shape[1]):
      num, den = 0.0, 0.0
      for n in range(s.shape[2]):
        pt = ref_softmax((np.float64(t[v, b, n]) - c) / tt)
        log_ps = np.log(ref_softmax(np.float64(s[v, b, n]) / ts))
        num += mask[v, b, n] * -np.sum(pt * log_ps)
        den += mask[v, b, n]
      per_image.append(num / max(den, 1.0))
  return np.mean(per_image)


def ref_ijepa(pred, target, valid, distance):
  total, count = 0.0, 0
  for i in np.ndindex(pred.shape[:-1]):
    if valid is not None and not valid[i]:
      continue
    t = np.float64(target[i])
    t = (t - t.mean()) / math.sqrt(t.var() + 1e-5)  # F.layer_norm
    for x, y in zip(pred[i], t):
      d = x - y
      if distance == "l2":
        total += d * d
      else:  # F.smooth_l1_loss, beta = 1
        total += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
      count += 1
  return total / count


def ref_koleo(x, eps=1e-8):
  u = [np.float64(r) / max(np.linalg.norm(r), eps) for r in x]
  total = 0.0
  for i, ui in enumerate(u):
    # DINOv2's neighbour: the largest inner product (ties: first index).
    j = max((k for k in range(len(u)) if k != i), key=lambda k: ui @ u[k])
    total += -math.log(np.linalg.norm(ui - u[j]) + eps)
  return total / len(u)


# ----------------------------------------------------------- references ---


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_matches_reference(norm_pix):
  pred, target, mask = _normal(3, 5, 6), _normal(3, 5, 6), _mask(3, 5)
  value = jax.jit(lambda *a: mae(*a, norm_pix=norm_pix))(pred, target, mask)
  np.testing.assert_allclose(value, ref_mae(pred, target, mask, norm_pix),
                             rtol=1e-5)
  # Without a mask: every patch (predictions already gathered).
  np.testing.assert_allclose(
      mae(pred, target, norm_pix=norm_pix),
      ref_mae(pred, target, np.ones((3, 5)), norm_pix), rtol=1e-5)


def test_mae_hand_case_and_empty_mask():
  # Patch [0, 2]: mean 1, unbiased var 2 -> [-1/√2, 1/√2].
  target = np.array([[[0.0, 2.0]]], np.float32)
  value = mae(np.zeros((1, 1, 2)), target, eps=0.0 + 1e-12)
  np.testing.assert_allclose(value, 0.5, rtol=1e-5)
  assert float(mae(np.ones((1, 2, 2)), np.ones((1, 2, 2)),
                   np.zeros((1, 2)), norm_pix=False)) == 0.0


@pytest.mark.parametrize("views", [1, 2])
def test_ibot_patch_matches_reference(views):
  s, t, c = _normal(views, 3, 4, 5), _normal(views, 3, 4, 5), _normal(5)
  mask = _mask(views, 3, 4)
  mask[0, 0] = False  # an image without masked patches adds 0
  value = jax.jit(lambda *a: ibot_patch(*a, student_temp=0.2,
                                        teacher_temp=0.07))(s, t, c, mask)
  np.testing.assert_allclose(
      value, ref_ibot_patch(s, t, c, mask, 0.2, 0.07), rtol=1e-5)


def test_ibot_patch_takes_the_sinkhorn_codes_as_log_probabilities():
  s, q = _normal(1, 2, 3, 4), RNG.dirichlet(np.ones(4), (1, 2, 3))
  mask = np.ones((1, 2, 3), bool)
  value = ibot_patch(s, np.log(q), np.zeros(4), mask, teacher_temp=1.0)
  log_ps = jax.nn.log_softmax(s / 0.1, axis=-1)
  np.testing.assert_allclose(value, -np.mean(np.sum(q * log_ps, -1)),
                             rtol=1e-5)


@pytest.mark.parametrize("distance", ["smooth_l1", "l2"])
@pytest.mark.parametrize("with_valid", [False, True])
def test_ijepa_matches_reference(distance, with_valid):
  pred, target = _normal(2, 3, 4, 6, scale=2.0), _normal(2, 3, 4, 6)
  valid = _mask(2, 3, 4, p=0.7) if with_valid else None
  value = jax.jit(lambda *a: ijepa(*a, distance=distance))(pred, target,
                                                          valid)
  np.testing.assert_allclose(value, ref_ijepa(pred, target, valid, distance),
                             rtol=1e-5)


def test_koleo_matches_reference():
  x = _normal(7, 5)
  np.testing.assert_allclose(jax.jit(koleo)(x), ref_koleo(x), rtol=1e-5)
  # Identical rows: ρ = 0, a finite −log ε.
  same = koleo(np.ones((3, 4), np.float32))
  assert np.isfinite(same) and float(same) > 10


# ------------------------------------------------------------ gradients ---


def _differentiable_cases():
  s, t, c, m = _normal(2, 2, 3, 4), _normal(2, 2, 3, 4), _normal(4), \
      _mask(2, 2, 3)
  pred, target = _normal(2, 3, 4), _normal(2, 3, 4)
  return [
      ("mae", lambda x: mae(x, target, m[0].reshape(2, 3)), pred),
      ("ibot_patch", lambda x: ibot_patch(x, t, c, m, teacher_temp=0.3), s),
      ("ijepa_smooth_l1", lambda x: ijepa(x, target), pred),
      ("ijepa_l2", lambda x: ijepa(x, target, distance="l2"), pred),
      ("koleo", koleo, _normal(6, 4)),
  ]


@pytest.mark.parametrize("name,fn,x", _differentiable_cases(),
                         ids=[c[0] for c in _differentiable_cases()])
def test_gradients_float64(name, fn, x):
  del name
  with jax.enable_x64(True):
    check_grads(fn, (jnp.asarray(x, jnp.float64),), order=1, modes=["rev"],
                atol=1e-4, rtol=1e-4)


def test_no_gradient_reaches_targets_masks_or_centres():
  s, t, c, m = _normal(1, 2, 3, 4), _normal(1, 2, 3, 4), _normal(4), \
      np.ones((1, 2, 3), np.float32)
  grads = jax.grad(lambda t, c, m: ibot_patch(s, t, c, m), argnums=(0, 1, 2))(
      t, c, m)
  assert all(not np.any(g) for g in grads)
  pred, target, w = _normal(2, 3, 4), _normal(2, 3, 4), np.ones((2, 3))
  for loss in (lambda t, w: mae(pred, t, w), lambda t, w: ijepa(pred, t, w)):
    grads = jax.grad(loss, argnums=(0, 1))(target, w)
    assert all(not np.any(g) for g in grads)


def test_bfloat16_inputs_compute_in_float32():
  for name, fn, x in _differentiable_cases():
    half = jnp.asarray(x, jnp.bfloat16)
    value = fn(half)
    assert value.dtype == jnp.float32, name
    np.testing.assert_allclose(value, fn(np.asarray(half, np.float32)),
                               rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(value, fn(x), rtol=5e-2, atol=5e-2,
                               err_msg=name)


# ----------------------------------------------------------- multi-device ---


def _mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def _batched_cases():
  """(name, loss(x, *rest, axis_name=None), x, rest): x and rest split
  over the batch."""
  pred, target = _normal(16, 3, 4), _normal(16, 3, 4)
  mask = _mask(16, 3)
  mask[:, 0] = True  # every shard has masked patches
  return [
      ("mae", lambda x, t, m, axis_name=None: mae(x, t, m,
                                                   axis_name=axis_name),
       pred, (target, mask)),
      ("ijepa", lambda x, t, m, axis_name=None: ijepa(x, t, m,
                                                       axis_name=axis_name),
       pred, (target, mask)),
      ("koleo", lambda x, axis_name=None: koleo(x, axis_name=axis_name),
       _normal(16, 5), ()),
  ]


@pytest.mark.parametrize("name,loss,x,rest", _batched_cases(),
                         ids=[c[0] for c in _batched_cases()])
def test_eight_devices_match_one(name, loss, x, rest):
  del name
  mesh = _mesh()
  value, grad = jax.value_and_grad(loss)(x, *rest)
  # Global view: sharded arrays under jit, no collective written.
  shard = NamedSharding(mesh, P("data"))
  args = jax.device_put((x, *rest), shard)
  v8, g8 = jax.jit(jax.value_and_grad(loss))(*args)
  np.testing.assert_allclose(v8, value, rtol=1e-5)
  np.testing.assert_allclose(g8, grad, rtol=1e-4, atol=1e-7)

  # Per device, with axis_name: the mean of per-device losses.
  def per_device(x, *rest):
    return jax.shard_map(
        lambda *a: loss(*a, axis_name="data")[None], mesh=mesh,
        in_specs=(P("data"),) * (1 + len(rest)),
        out_specs=P("data"))(x, *rest).mean()

  v8, g8 = jax.jit(jax.value_and_grad(per_device))(x, *rest)
  np.testing.assert_allclose(v8, value, rtol=1e-5)
  np.testing.assert_allclose(g8, grad, rtol=1e-4, atol=1e-7)


def test_koleo_without_axis_name_is_local():
  # Guards the test above: neighbours within each device's 2 rows differ.
  mesh, x = _mesh(), _normal(16, 5)
  local = jax.shard_map(lambda a: koleo(a)[None], mesh=mesh,
                        in_specs=P("data"), out_specs=P("data"))(x).mean()
  assert abs(float(local) - float(koleo(x))) > 1e-2


def test_ibot_patch_per_device_mean_is_the_global_loss():
  mesh = _mesh()
  s, t, c, m = _normal(2, 16, 3, 4), _normal(2, 16, 3, 4), _normal(4), \
      _mask(2, 16, 3)
  per_device = jax.shard_map(
      lambda a, b, w: ibot_patch(a, b, c, w)[None], mesh=mesh,
      in_specs=(P(None, "data"),) * 3, out_specs=P("data"))
  np.testing.assert_allclose(per_device(s, t, m).mean(),
                             ibot_patch(s, t, c, m), rtol=1e-5)


# ------------------------------------------------------------ bad inputs ---


@pytest.mark.parametrize("call, match", [
    (lambda: mae(np.zeros((2, 3)), np.zeros((2, 3))), "prediction"),
    (lambda: mae(np.zeros((2, 3, 4)), np.zeros((2, 3, 5))), "shapes"),
    (lambda: mae(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.ones((2, 4))),
     "mask"),
    (lambda: mae(np.zeros((2, 3, 1)), np.zeros((2, 3, 1))), "norm_pix"),
    (lambda: mae(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), eps=0.0), "eps"),
    (lambda: ibot_patch(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros(4),
                        np.ones(3)), "student_logits"),
    (lambda: ibot_patch(np.zeros((1, 3, 4)), np.zeros((1, 3, 4)),
                        np.zeros(5), np.ones((1, 3))), "center"),
    (lambda: ibot_patch(np.zeros((1, 3, 4)), np.zeros((1, 3, 4)),
                        np.zeros(4), np.ones((1, 4))), "mask"),
    (lambda: ibot_patch(np.zeros((1, 3, 4)), np.zeros((1, 3, 4)),
                        np.zeros(4), np.ones((1, 3)), teacher_temp=0.0),
     "teacher_temp"),
    (lambda: ijepa(np.zeros((2, 3)), np.zeros((2, 3)), distance="l1"),
     "distance"),
    (lambda: ijepa(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3)), "valid"),
    (lambda: koleo(np.zeros((1, 3))), "2 rows"),
    (lambda: koleo(np.zeros(3)), "`x`"),
])
def test_bad_inputs_raise_clear_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()
