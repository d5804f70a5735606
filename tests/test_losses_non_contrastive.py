"""ssljax.losses.non_contrastive against numpy loops of the papers' formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from ssljax.losses.non_contrastive import (barlow_twins, byol, dino, simsiam,
                                           vicreg)

RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
  return (scale * RNG.normal(size=shape)).astype(np.float32)


# ------------------------------------------------------ numpy references ---


def ref_cos_rows(a, b):
  out = []
  for x, y in zip(np.float64(a), np.float64(b)):
    nx, ny = math.sqrt(np.dot(x, x)), math.sqrt(np.dot(y, y))
    out.append(0.0 if nx == 0 or ny == 0 else np.dot(x, y) / (nx * ny))
  return np.array(out)


def ref_byol(p, t):
  return np.mean(2.0 - 2.0 * ref_cos_rows(p, t))


def ref_simsiam(p, t):
  return -np.mean(ref_cos_rows(p, t))


def ref_barlow(z1, z2, lambda_=5e-3, eps=1e-5):
  z1, z2 = np.float64(z1), np.float64(z2)
  n, d = z1.shape

  def standardise(z):
    out = np.zeros_like(z)
    for j in range(d):
      mean = sum(z[k, j] for k in range(n)) / n
      var = sum((z[k, j] - mean) ** 2 for k in range(n)) / n  # biased, as BN
      for k in range(n):
        out[k, j] = (z[k, j] - mean) / math.sqrt(var + eps)
    return out

  a, b = standardise(z1), standardise(z2)
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c = sum(a[k, i] * b[k, j] for k in range(n)) / n
      loss += (1 - c) ** 2 if i == j else lambda_ * c ** 2
  return loss


def ref_vicreg(z1, z2, sim=25.0, var=25.0, cov=1.0, eps=1e-4):
  z1, z2 = np.float64(z1), np.float64(z2)
  n, d = z1.shape
  invariance = sum((z1[k, j] - z2[k, j]) ** 2
                   for k in range(n) for j in range(d)) / (n * d)

  def terms(z):
    mean = [sum(z[k, j] for k in range(n)) / n for j in range(d)]
    c = np.zeros((d, d))
    for i in range(d):
      for j in range(d):
        c[i, j] = sum((z[k, i] - mean[i]) * (z[k, j] - mean[j])
                      for k in range(n)) / (n - 1)
    v = sum(max(0.0, 1 - math.sqrt(c[j, j] + eps)) for j in range(d)) / d
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return v, off

  v1, c1 = terms(z1)
  v2, c2 = terms(z2)
  return sim * invariance + var * (v1 + v2) / 2 + cov * (c1 + c2)


def np_softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def ref_dino(s, t, c, student_temp=0.1, teacher_temp=0.04):
  s, t, c = np.float64(s), np.float64(t), np.float64(c)
  vs, b, _ = s.shape
  vt = t.shape[0]
  total, terms = 0.0, 0
  for i in range(vt):
    for j in range(vs):
      if i == j:
        continue
      pair = 0.0
      for n in range(b):
        p_t = np_softmax((t[i, n] - c) / teacher_temp)
        log_p_s = np.log(np_softmax(s[j, n] / student_temp))
        pair += -np.sum(p_t * log_p_s)
      total += pair / b
      terms += 1
  return total / terms


# --------------------------------------------------------- BYOL, SimSiam ---


@pytest.mark.parametrize("loss,ref", [(byol, ref_byol), (simsiam, ref_simsiam)])
def test_regression_losses_match_reference(loss, ref):
  p, t = _normal(6, 5), _normal(6, 5)
  np.testing.assert_allclose(loss(p, t), ref(p, t), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(loss)(p, t), ref(p, t), rtol=1e-5,
                             atol=1e-6)


def test_byol_hand_cases():
  x = np.array([[1.0, 2.0, -1.0]], np.float32)
  orth = np.array([[2.0, -1.0, 0.0]], np.float32)
  assert float(byol(x, 3 * x)) == pytest.approx(0.0, abs=1e-6)
  assert float(byol(x, -x)) == pytest.approx(4.0, abs=1e-6)
  assert float(byol(x, orth)) == pytest.approx(2.0, abs=1e-6)


def test_simsiam_hand_cases():
  x = np.array([[1.0, 2.0], [0.0, -3.0]], np.float32)
  assert float(simsiam(x, 5 * x)) == pytest.approx(-1.0, abs=1e-6)
  assert float(simsiam(x, -x)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("loss", [byol, simsiam])
def test_regression_losses_stop_gradient_on_target(loss):
  p, t = _normal(4, 3), _normal(4, 3)
  g_p, g_t = jax.grad(loss, argnums=(0, 1))(p, t)
  assert np.abs(g_p).max() > 0
  np.testing.assert_array_equal(g_t, 0.0)


@pytest.mark.parametrize("loss", [byol, simsiam])
def test_regression_losses_gradients_float64(loss):
  with jax.enable_x64(True):
    p = RNG.normal(size=(4, 3))
    t = jnp.asarray(RNG.normal(size=(4, 3)))
    check_grads(lambda q: loss(q, t), (jnp.asarray(p),), order=1,
                modes=["rev"])
    assert loss(p, t).dtype == jnp.float64


# A zero vector has cosine 0 with everything: byol 2, simsiam 0.
@pytest.mark.parametrize("loss,expected", [(byol, 2.0), (simsiam, 0.0)])
def test_regression_losses_zero_vectors_finite(loss, expected):
  p = np.zeros((3, 4), np.float32)
  t = _normal(3, 4)
  t[1] = 0.0
  value, grad = jax.value_and_grad(loss)(p, t)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(value, expected, atol=1e-6)


# ---------------------------------------------------------- Barlow Twins ---


@pytest.mark.parametrize("lambda_", [5e-3, 0.5])
def test_barlow_twins_matches_reference(lambda_):
  z1, z2 = _normal(8, 5), _normal(8, 5, scale=3.0)
  np.testing.assert_allclose(
      barlow_twins(z1, z2, lambda_=lambda_), ref_barlow(z1, z2, lambda_),
      rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(lambda a, b: barlow_twins(a, b, lambda_=lambda_))(z1, z2),
      ref_barlow(z1, z2, lambda_), rtol=1e-5)


def test_barlow_twins_hand_cases():
  # Two perfectly correlated features (the second is twice the first): with
  # eps -> 0 both standardise to the same column, C is all ones, so the
  # diagonal term is 0 and the off-diagonal term is 2·λ.
  x = np.array([-1.0, 1.0, -1.0, 1.0], np.float32)
  z = np.stack([x, 2 * x], axis=1)
  np.testing.assert_allclose(barlow_twins(z, z, lambda_=0.1, eps=1e-12), 0.2,
                             rtol=1e-5)
  # Uncorrelated ±1 features: C = I (loss 0); against −z, C = −I: 2·(1+1)².
  w = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  assert float(barlow_twins(w, w, eps=1e-12)) == pytest.approx(0.0, abs=1e-6)
  assert float(barlow_twins(w, -w, eps=1e-12)) == pytest.approx(8.0, rel=1e-6)


def test_barlow_twins_gradient_float64():
  with jax.enable_x64(True):
    z1, z2 = jnp.asarray(RNG.normal(size=(6, 3))), jnp.asarray(
        RNG.normal(size=(6, 3)))
    check_grads(lambda a, b: barlow_twins(a, b, lambda_=0.3), (z1, z2),
                order=1, modes=["rev"])


def test_barlow_twins_constant_features_finite():
  z1 = _normal(6, 3)
  z1[:, 1] = 4.0  # zero-variance feature
  z2 = np.zeros((6, 3), np.float32)  # all features constant
  value, grads = jax.value_and_grad(barlow_twins, argnums=(0, 1))(z1, z2)
  assert np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in grads)
  # Every standardised z2 column is 0, so C = 0 and the loss is D.
  np.testing.assert_allclose(value, 3.0, rtol=1e-6)


# ---------------------------------------------------------------- VICReg ---


def _spread(n, d):
  # Feature scales far from std 1 on both sides keep relu(1 − std) away
  # from its kink, where finite differences would straddle two slopes.
  return _normal(n, d) * np.array([0.3, 3.0, 0.5, 4.0][:d], np.float32)


@pytest.mark.parametrize("weights", [{}, dict(sim_weight=1.0, var_weight=2.0,
                                              cov_weight=3.0)])
def test_vicreg_matches_reference(weights):
  z1, z2 = _spread(8, 4), _spread(8, 4)
  ref = ref_vicreg(z1, z2, weights.get("sim_weight", 25.0),
                   weights.get("var_weight", 25.0),
                   weights.get("cov_weight", 1.0))
  np.testing.assert_allclose(vicreg(z1, z2, **weights), ref, rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(lambda a, b: vicreg(a, b, **weights))(z1, z2), ref, rtol=1e-5)


def test_vicreg_hand_cases():
  w = 2.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  # Unbiased variance 16/3 > 1 and zero covariance: only invariance counts.
  assert float(vicreg(w, w)) == pytest.approx(0.0, abs=1e-6)
  assert float(vicreg(w, w + 1.0)) == pytest.approx(25.0, rel=1e-6)
  # Collapsed to zeros: 25 · relu(1 − sqrt(1e-4)), the same for both views.
  zeros = np.zeros((4, 2), np.float32)
  assert float(vicreg(zeros, zeros)) == pytest.approx(24.75, rel=1e-6)


def test_vicreg_gradient_float64():
  with jax.enable_x64(True):
    z1, z2 = jnp.asarray(_spread(6, 4), jnp.float64), jnp.asarray(
        _spread(6, 4), jnp.float64)
    check_grads(vicreg, (z1, z2), order=1, modes=["rev"])


def test_vicreg_constant_features_finite():
  z1 = np.zeros((5, 3), np.float32)
  z2 = _normal(5, 3)
  z2[:, 0] = -2.0
  value, grads = jax.value_and_grad(vicreg, argnums=(0, 1))(z1, z2)
  assert np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in grads)
  np.testing.assert_allclose(value, ref_vicreg(z1, z2), rtol=1e-5)


# ------------------------------------------------------------------- DINO ---


@pytest.mark.parametrize("views", [(4, 2), (2, 2), (3, 1)])
def test_dino_matches_reference(views):
  vs, vt = views
  s, t, c = _normal(vs, 3, 6), _normal(vt, 3, 6), _normal(6, scale=0.1)
  ref = ref_dino(s, t, c)
  np.testing.assert_allclose(dino(s, t, c), ref, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(dino)(s, t, c), ref, rtol=1e-5)
  np.testing.assert_allclose(
      dino(s, t, c, student_temp=0.5, teacher_temp=0.07),
      ref_dino(s, t, c, 0.5, 0.07), rtol=1e-5)


def test_dino_hand_cases():
  # A uniform student gives log K whatever the teacher.
  t = _normal(2, 3, 5)
  np.testing.assert_allclose(dino(np.zeros((3, 3, 5)), t, np.zeros(5)),
                             math.log(5), rtol=1e-6)
  # A one-hot teacher (tiny temperature) against student logits: −log P_s of
  # the teacher's class, averaged over the 2 cross pairs.
  s = np.array([[[0.0, math.log(3.0)]], [[math.log(3.0), 0.0]]], np.float32)
  t = np.array([[[0.0, 1.0]], [[1.0, 0.0]]], np.float32)
  # Pair (0, 1): class 1 against student view 1 probs [3/4, 1/4] -> log 4;
  # pair (1, 0): class 0 against view 0 probs [1/4, 3/4] -> log 4.
  np.testing.assert_allclose(
      dino(s, t, np.zeros(2), student_temp=1.0, teacher_temp=1e-3),
      math.log(4.0), rtol=1e-5)


def test_dino_no_gradient_to_teacher_or_center():
  s, t, c = _normal(3, 2, 4), _normal(2, 2, 4), _normal(4)
  g_s, g_t, g_c = jax.grad(dino, argnums=(0, 1, 2))(s, t, c)
  assert np.abs(g_s).max() > 0
  np.testing.assert_array_equal(g_t, 0.0)
  np.testing.assert_array_equal(g_c, 0.0)


def test_dino_gradient_float64():
  with jax.enable_x64(True):
    s = jnp.asarray(RNG.normal(size=(3, 2, 4)))
    t, c = jnp.asarray(RNG.normal(size=(2, 2, 4))), jnp.asarray(
        RNG.normal(size=4))
    check_grads(lambda x: dino(x, t, c, student_temp=0.5, teacher_temp=0.2),
                (s,), order=1, modes=["rev"])


@pytest.mark.parametrize("temp", [1e-6, 1e4])
def test_dino_extreme_temperatures_finite(temp):
  s, t, c = _normal(3, 2, 4, scale=10.0), _normal(2, 2, 4), _normal(4)
  value, grad = jax.value_and_grad(
      lambda x: dino(x, t, c, student_temp=temp, teacher_temp=temp))(s)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_dino_traced_teacher_temperature():
  s, t, c = _normal(3, 2, 4), _normal(2, 2, 4), _normal(4)
  traced = jax.jit(lambda temp: dino(s, t, c, teacher_temp=temp))(0.07)
  np.testing.assert_allclose(traced, ref_dino(s, t, c, 0.1, 0.07), rtol=1e-5)


# ------------------------------------------------------ dtype / precision ---


def _all_losses():
  return [
      ("byol", byol, (_normal(4, 6), _normal(4, 6))),
      ("simsiam", simsiam, (_normal(4, 6), _normal(4, 6))),
      ("barlow_twins", barlow_twins, (_normal(8, 4), _normal(8, 4))),
      ("vicreg", vicreg, (_spread(8, 4), _spread(8, 4))),
      ("dino", dino, (_normal(4, 2, 5), _normal(2, 2, 5), _normal(5))),
  ]


@pytest.mark.parametrize("name,loss,args", _all_losses(),
                         ids=[n for n, _, _ in _all_losses()])
def test_bfloat16_inputs_compute_in_float32(name, loss, args):
  del name
  half = tuple(jnp.asarray(a, jnp.bfloat16) for a in args)
  value = loss(*half)
  assert value.dtype == jnp.float32
  rounded = tuple(np.asarray(h, np.float32) for h in half)
  np.testing.assert_allclose(value, loss(*rounded), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(value, loss(*args), rtol=5e-2, atol=5e-2)


# ----------------------------------------------------------- multi-device ---


def _mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


@pytest.mark.parametrize("loss", [barlow_twins, vicreg])
def test_global_view_under_jit_matches_single_device(loss):
  mesh = _mesh()
  z1, z2 = _spread(16, 4), _spread(16, 4)
  sharding = NamedSharding(mesh, P("data"))
  a, b = jax.device_put(z1, sharding), jax.device_put(z2, sharding)
  np.testing.assert_allclose(jax.jit(loss)(a, b), loss(z1, z2), rtol=1e-5)
  g_sharded = jax.jit(jax.grad(loss, argnums=(0, 1)))(a, b)
  g_single = jax.grad(loss, argnums=(0, 1))(z1, z2)
  for gs, g in zip(g_sharded, g_single):
    np.testing.assert_allclose(gs, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", [barlow_twins, vicreg])
def test_shard_map_axis_name_matches_single_device(loss):
  mesh = _mesh()
  z1, z2 = _spread(16, 4), _spread(16, 4)

  def sharded(a, b):
    per_device = jax.shard_map(
        lambda x, y: loss(x, y, axis_name="data")[None], mesh=mesh,
        in_specs=(P("data"), P("data")), out_specs=P("data"))(a, b)
    return per_device.mean()

  np.testing.assert_allclose(jax.jit(sharded)(z1, z2), loss(z1, z2),
                             rtol=1e-5)
  g_sharded = jax.jit(jax.grad(sharded, argnums=(0, 1)))(z1, z2)
  g_single = jax.grad(loss, argnums=(0, 1))(z1, z2)
  for gs, g in zip(g_sharded, g_single):
    np.testing.assert_allclose(gs, g, rtol=1e-4, atol=1e-6)


def test_shard_map_without_axis_name_is_local():
  # Guards the test above: per-device statistics differ from global ones.
  mesh = _mesh()
  z1, z2 = _spread(16, 4), _spread(16, 4)
  local = jax.shard_map(lambda x, y: barlow_twins(x, y)[None], mesh=mesh,
                        in_specs=(P("data"), P("data")),
                        out_specs=P("data"))(z1, z2).mean()
  assert abs(float(local) - float(barlow_twins(z1, z2))) > 1e-2


def test_dino_sharded_batch_matches_single_device():
  mesh = _mesh()
  s, t, c = _normal(3, 16, 5), _normal(2, 16, 5), _normal(5)
  batch = NamedSharding(mesh, P(None, "data"))
  s_sh, t_sh = jax.device_put(s, batch), jax.device_put(t, batch)
  np.testing.assert_allclose(jax.jit(dino)(s_sh, t_sh, c), dino(s, t, c),
                             rtol=1e-5)
  # Per-example terms: the mean of per-shard losses is the global loss.
  per_device = jax.shard_map(
      lambda x, y: dino(x, y, c)[None], mesh=mesh,
      in_specs=(P(None, "data"), P(None, "data")), out_specs=P("data"))
  np.testing.assert_allclose(per_device(s, t).mean(), dino(s, t, c),
                             rtol=1e-5)


# ------------------------------------------------------------ bad inputs ---


@pytest.mark.parametrize("loss", [byol, simsiam])
def test_regression_losses_bad_inputs(loss):
  with pytest.raises(ValueError, match="prediction"):
    loss(np.zeros(3), np.zeros((1, 3)))
  with pytest.raises(ValueError, match="target"):
    loss(np.zeros((1, 3)), np.zeros((1, 1, 3)))
  with pytest.raises(ValueError, match="target"):
    loss(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("loss", [barlow_twins, vicreg])
def test_batch_statistics_losses_bad_inputs(loss):
  with pytest.raises(ValueError, match="z1"):
    loss(np.zeros(3), np.zeros((1, 3)))
  with pytest.raises(ValueError, match="z2"):
    loss(np.zeros((4, 3)), np.zeros((4, 3, 1)))
  with pytest.raises(ValueError, match="z2"):
    loss(np.zeros((4, 3)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="eps"):
    loss(np.zeros((4, 3)), np.zeros((4, 3)), eps=0.0)


def test_barlow_twins_bad_lambda():
  with pytest.raises(ValueError, match="lambda_"):
    barlow_twins(np.zeros((4, 3)), np.zeros((4, 3)), lambda_=-1.0)


def test_vicreg_bad_weights_and_batch():
  z = np.zeros((4, 3))
  for name in ("sim_weight", "var_weight", "cov_weight"):
    with pytest.raises(ValueError, match=name):
      vicreg(z, z, **{name: -1.0})
  with pytest.raises(ValueError, match="z1"):
    vicreg(np.zeros((1, 3)), np.zeros((1, 3)))


def test_dino_bad_inputs():
  s, t, c = np.zeros((3, 2, 4)), np.zeros((2, 2, 4)), np.zeros(4)
  with pytest.raises(ValueError, match="student_logits"):
    dino(s[0], t, c)
  with pytest.raises(ValueError, match="teacher_logits"):
    dino(s, t[0], c)
  with pytest.raises(ValueError, match="center"):
    dino(s, t, np.zeros(5))
  with pytest.raises(ValueError, match="center"):
    dino(s, t, np.zeros((1, 4)))
  with pytest.raises(ValueError, match="teacher_logits"):
    dino(s, np.zeros((2, 3, 4)), c)  # batch mismatch
  with pytest.raises(ValueError, match="teacher_logits"):
    dino(s, np.zeros((2, 2, 5)), np.zeros(5))  # K mismatch
  with pytest.raises(ValueError, match="teacher_logits"):
    dino(s[:1], t, c)  # Vt > Vs
  with pytest.raises(ValueError, match="student_logits"):
    dino(s[:1], t[:1], c)  # no pair of different views
  with pytest.raises(ValueError, match="student_temp"):
    dino(s, t, c, student_temp=0.0)
  with pytest.raises(ValueError, match="teacher_temp"):
    dino(s, t, c, teacher_temp=-0.04)
