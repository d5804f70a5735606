"""Tests for ssljax.state.ema and ssljax.state.center against numpy formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssljax.state import center, ema

RNG = np.random.default_rng(0)


def _normal(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def _params():
  return {"dense": {"w": _normal(3, 2), "b": _normal(2)},
          "blocks": [_normal(4), (_normal(2, 2), _normal(1))]}


# -------------------------------------------------------------- ema.update ---


@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.996, 1.0])
def test_ema_update_nested_pytree_matches_numpy(momentum):
  target, online = _params(), _params()
  new = ema.update(target, online, momentum)
  assert jax.tree.structure(new) == jax.tree.structure(target)
  for got, t, o in zip(jax.tree.leaves(new), jax.tree.leaves(target),
                       jax.tree.leaves(online)):
    want = np.empty_like(t, dtype=np.float64)
    for idx in np.ndindex(t.shape):
      want[idx] = momentum * float(t[idx]) + (1 - momentum) * float(o[idx])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_ema_update_momentum_extremes():
  target, online = _params(), _params()
  for got, want in zip(jax.tree.leaves(ema.update(target, online, 1.0)),
                       jax.tree.leaves(target)):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(ema.update(target, online, 0.0)),
                       jax.tree.leaves(online)):
    np.testing.assert_array_equal(got, want)


def test_ema_update_traced_momentum_under_jit():
  target, online = _params(), _params()
  jitted = jax.jit(ema.update)(target, online, jnp.float32(0.9))
  eager = ema.update(target, online, 0.9)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_ema_update_keeps_leaf_dtypes():
  target = {"half": jnp.full((3,), 1.0, jnp.bfloat16),
            "single": jnp.zeros(2, jnp.float32)}
  online = {"half": jnp.full((3,), 2.0, jnp.float32),
            "single": jnp.ones(2, jnp.bfloat16)}
  new = ema.update(target, online, 0.5)
  assert new["half"].dtype == jnp.bfloat16
  assert new["single"].dtype == jnp.float32
  np.testing.assert_allclose(np.float32(new["half"]), 1.5)
  np.testing.assert_allclose(new["single"], 0.5)
  with jax.enable_x64(True):
    t64 = jnp.asarray([1.0, 3.0], jnp.float64)
    new64 = ema.update(t64, jnp.asarray([0.0, 1.0], jnp.float64), 0.25)
    assert new64.dtype == jnp.float64
    np.testing.assert_allclose(new64, [0.25, 1.5], rtol=1e-15)


def test_ema_update_bad_inputs():
  target = _params()
  for bad in (-0.1, 1.5, float("nan"), jnp.float32(2.0)):
    with pytest.raises(ValueError, match="momentum"):
      ema.update(target, target, bad)
  with pytest.raises(ValueError, match="momentum"):
    ema.update(target, target, jnp.array([0.9, 0.9]))
  with pytest.raises(ValueError, match="online"):
    ema.update({"a": np.zeros(2)}, {"b": np.zeros(2)}, 0.9)
  with pytest.raises(ValueError, match="online"):
    ema.update({"a": np.zeros(2)}, {"a": np.zeros(3)}, 0.9)


# ---------------------------------------------------------------- ema.init ---


def test_ema_init_copies_online_params():
  online = jax.tree.map(jnp.asarray, _params())
  target = ema.init(online)
  assert jax.tree.structure(target) == jax.tree.structure(online)
  for t, o in zip(jax.tree.leaves(target), jax.tree.leaves(online)):
    np.testing.assert_array_equal(t, o)
    assert t.dtype == o.dtype
    assert t.unsafe_buffer_pointer() != o.unsafe_buffer_pointer()


def test_ema_init_target_can_be_donated_with_online():
  online = {"w": jnp.arange(4.0)}
  target = ema.init(online)
  step = jax.jit(lambda t, o: (ema.update(t, o, 0.5), o),
                 donate_argnums=(0, 1))
  new_target, new_online = step(target, online)
  np.testing.assert_allclose(new_target["w"], np.arange(4.0))
  np.testing.assert_allclose(new_online["w"], np.arange(4.0))


# -------------------------------------------------------------- schedules ---


def ref_cosine(step, total, base, final):
  step = min(max(step, 0), total)
  return final - (final - base) * (math.cos(math.pi * step / total) + 1) / 2


@pytest.mark.parametrize("step,want", [(0, 0.99), (50, 0.995), (100, 1.0),
                                       (250, 1.0), (-5, 0.99)])
def test_cosine_momentum_hand_points(step, want):
  np.testing.assert_allclose(ema.cosine_momentum(step, 100, base=0.99), want,
                             rtol=1e-7)


def test_cosine_momentum_traced_step_matches_numpy():
  steps = jnp.arange(0, 130, 7)
  got = jax.jit(jax.vmap(
      lambda s: ema.cosine_momentum(s, 120, base=0.9, final=0.99)))(steps)
  want = [ref_cosine(int(s), 120, 0.9, 0.99) for s in steps]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # The default base and final are BYOL's.
  np.testing.assert_allclose(ema.cosine_momentum(0, 10), 0.996, rtol=1e-7)


def test_constant_momentum():
  assert ema.constant_momentum(0).dtype == jnp.float32
  for step in (0, 10, 10**6):
    np.testing.assert_allclose(ema.constant_momentum(step, 100, base=0.999),
                               0.999, rtol=1e-7)
  np.testing.assert_allclose(
      jax.jit(lambda s: ema.constant_momentum(s))(jnp.int32(3)), 0.99,
      rtol=1e-7)


def test_schedules_bad_inputs():
  for total in (0, -10):
    with pytest.raises(ValueError, match="total_steps"):
      ema.cosine_momentum(1, total)
  with pytest.raises(ValueError, match="base"):
    ema.cosine_momentum(1, 10, base=1.2)
  with pytest.raises(ValueError, match="final"):
    ema.cosine_momentum(1, 10, final=-0.5)
  with pytest.raises(ValueError, match="base"):
    ema.constant_momentum(1, base=2.0)


# ------------------------------------------------------------------ center ---


def test_center_init():
  c = center.init(5)
  assert c.shape == (5,) and c.dtype == jnp.float32
  np.testing.assert_array_equal(c, 0.0)
  for bad in (0, -3, 2.5):
    with pytest.raises(ValueError, match="dim"):
      center.init(bad)


def ref_center(c, logits, momentum):
  rows = np.float64(logits).reshape(-1, logits.shape[-1])
  mean = [sum(rows[r, k] for r in range(rows.shape[0])) / rows.shape[0]
          for k in range(rows.shape[1])]
  return [momentum * c[k] + (1 - momentum) * mean[k] for k in range(len(c))]


@pytest.mark.parametrize("shape", [(2, 3, 4), (5, 4)])
@pytest.mark.parametrize("momentum", [0.0, 0.9, 1.0])
def test_center_update_matches_numpy(shape, momentum):
  c, logits = _normal(4), _normal(*shape)
  np.testing.assert_allclose(center.update(c, logits, momentum),
                             ref_center(c, logits, momentum), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(
      jax.jit(center.update)(c, logits, jnp.float32(momentum)),
      ref_center(c, logits, momentum), rtol=1e-5, atol=1e-6)


def test_center_update_default_momentum_and_dtype():
  logits = jnp.ones((2, 3, 4), jnp.bfloat16)
  new = center.update(center.init(4), logits)
  assert new.dtype == jnp.float32
  np.testing.assert_allclose(new, 0.1, rtol=1e-6)


def test_center_update_no_gradient():
  c, logits = _normal(4), _normal(2, 3, 4)
  g_c, g_logits = jax.grad(lambda a, b: jnp.sum(center.update(a, b)),
                           argnums=(0, 1))(c, logits)
  np.testing.assert_array_equal(g_c, 0.0)
  np.testing.assert_array_equal(g_logits, 0.0)


def _mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def test_center_update_axis_name_matches_global():
  mesh = _mesh()
  c, logits = _normal(4), _normal(2, 16, 4)
  per_device = jax.jit(jax.shard_map(
      lambda lg: center.update(c, lg, 0.8, axis_name="data"), mesh=mesh,
      in_specs=P(None, "data"), out_specs=P()))
  np.testing.assert_allclose(per_device(logits), ref_center(c, logits, 0.8),
                             rtol=1e-5, atol=1e-6)


def test_center_update_global_view_under_jit():
  mesh = _mesh()
  c, logits = _normal(4), _normal(2, 16, 4)
  sharded = jax.device_put(logits, NamedSharding(mesh, P(None, "data")))
  np.testing.assert_allclose(jax.jit(center.update)(c, sharded, 0.8),
                             ref_center(c, logits, 0.8), rtol=1e-5, atol=1e-6)


def test_center_update_bad_inputs():
  c = np.zeros(4, np.float32)
  with pytest.raises(ValueError, match="center"):
    center.update(np.zeros((1, 4)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match="teacher_logits"):
    center.update(c, np.zeros(4))
  with pytest.raises(ValueError, match="teacher_logits"):
    center.update(c, np.zeros((2, 3, 5)))
  for bad in (-0.1, 1.01):
    with pytest.raises(ValueError, match="momentum"):
      center.update(c, np.zeros((2, 4)), bad)
