"""The memory-bounded blockwise logsumexp and the losses' blockwise path."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from ssljax.losses import _blockwise as B
from ssljax.losses import contrastive as C

RNG = np.random.default_rng(1)


def randn(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def ref_row_lse(q, k, exclude, scale):
  """Explicit loops: log sum_{j != exclude_i} exp(scale q_i . k_j)."""
  q, k = np.float64(q), np.float64(k)
  out = []
  for i in range(len(q)):
    logits = [scale * q[i] @ k[j] for j in range(len(k)) if j != exclude[i]]
    if not logits:
      out.append(-np.inf)
      continue
    m = max(logits)
    out.append(m + np.log(sum(np.exp(x - m) for x in logits)))
  return np.array(out)


Q, K = randn(7, 3), randn(11, 3)
EXCLUDE = np.array([0, 3, 10, -1, 5, 20, 2])  # -1 and 20: nothing excluded


@pytest.mark.parametrize("block_size", [1, 3, 4, 11, 64])
@pytest.mark.parametrize("exclude", [None, EXCLUDE], ids=["none", "exclude"])
def test_logsumexp_matches_reference(block_size, exclude):
  value = B.blockwise_logsumexp(Q, K, exclude, scale=1.7,
                                block_size=block_size)
  ref = ref_row_lse(Q, K, np.full(7, -1) if exclude is None else exclude, 1.7)
  np.testing.assert_allclose(value, ref, rtol=1e-6)


@pytest.mark.parametrize("block_size", [3, 11])
def test_logsumexp_gradients(block_size):
  with jax.enable_x64(True):
    check_grads(jax.jit(lambda q, k, s: B.blockwise_logsumexp(
        q, k, EXCLUDE, scale=s, block_size=block_size)),
                (np.float64(Q), np.float64(K), np.float64(1.7)), order=1,
                modes=["rev"])


@pytest.mark.parametrize("block_size", [1, 4, 11])
def test_logsumexp_value_and_gradient_equal_dense(block_size):
  weights = randn(7)  # a non-uniform cotangent

  def total(lse_fn, q, k):
    return jnp.sum(weights * lse_fn(q, k, EXCLUDE, scale=2.0))

  blockwise = functools.partial(B.blockwise_logsumexp, block_size=block_size)
  got = jax.jit(jax.value_and_grad(functools.partial(total, blockwise),
                                   (0, 1)))(Q, K)
  want = jax.value_and_grad(functools.partial(total, B.dense_logsumexp),
                            (0, 1))(Q, K)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_logsumexp_row_without_keys_is_minus_inf_with_zero_gradient():
  q, k = Q[:2], K[:1]
  lse_fn = lambda q, k: B.blockwise_logsumexp(q, k, np.array([0, 5]))
  lse = lse_fn(q, k)
  assert lse[0] == -np.inf and np.isfinite(lse[1])
  dq, dk = jax.grad(lambda q, k: lse_fn(q, k)[1], (0, 1))(q, k)
  assert np.isfinite(dq).all() and np.isfinite(dk).all()
  assert not np.any(dq[0])


@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_logsumexp_extreme_scale(scale):
  lse, grads = jax.value_and_grad(
      lambda q, k: B.blockwise_logsumexp(q, k, EXCLUDE, scale=scale,
                                         block_size=4).sum(), (0, 1))(Q, K)
  assert np.isfinite(lse) and all(np.isfinite(g).all() for g in grads)
  np.testing.assert_allclose(
      lse, ref_row_lse(Q, K, EXCLUDE, scale).sum(), rtol=1e-5)


def test_logsumexp_bfloat16_computes_in_float32():
  lse = B.blockwise_logsumexp(jnp.bfloat16(Q), jnp.bfloat16(K), block_size=4)
  assert lse.dtype == jnp.float32


# ----------------------------------------------- losses: blockwise = dense ---

T = 0.2
Z1, Z2 = randn(10, 6), randn(10, 6)
FEATS, LABELS = randn(5, 2, 6), np.array([1, 0, 1, 4, 0])
NEGS = randn(9, 6)

# name: (loss(*args, implementation=..., block_size=...), float args)
LOSSES = {
    "nt_xent": (functools.partial(C.nt_xent, temperature=T), (Z1, Z2)),
    "clip": (functools.partial(C.clip, temperature=T), (Z1, Z2)),
    "supcon": (lambda f, **kw: C.supcon(f, LABELS, temperature=T, **kw),
               (FEATS,)),
    "info_nce": (functools.partial(C.info_nce, temperature=T),
                 (Z1, Z2, NEGS)),
}


@pytest.mark.parametrize("block_size", [3, 7, 1024])  # 3, 7 divide no N here
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_blockwise_equals_dense(name, block_size):
  loss, args = LOSSES[name]
  argnums = tuple(range(len(args)))
  blockwise = jax.jit(jax.value_and_grad(functools.partial(
      loss, implementation="blockwise", block_size=block_size), argnums))
  dense = jax.value_and_grad(functools.partial(loss, implementation="dense"),
                             argnums)
  for g, w in zip(jax.tree.leaves(blockwise(*args)),
                  jax.tree.leaves(dense(*args))):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_blockwise_gradients(name):
  loss, args = LOSSES[name]
  with jax.enable_x64(True):
    check_grads(jax.jit(functools.partial(loss, implementation="blockwise",
                                          block_size=4)),
                tuple(np.float64(a) for a in args), order=1, modes=["rev"])


@pytest.mark.parametrize("t", [1e-4, 1e4])
def test_nt_xent_blockwise_extreme_temperature(t):
  f = functools.partial(C.nt_xent, temperature=t, implementation="blockwise",
                        block_size=3)
  value, grads = jax.jit(jax.value_and_grad(f, (0, 1)))(Z1, Z2)
  assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
  np.testing.assert_allclose(
      value, C.nt_xent(Z1, Z2, temperature=t, implementation="dense"),
      rtol=1e-5)


MESH = jax.make_mesh((8,), ("data",),
                     axis_types=(jax.sharding.AxisType.Auto,))
S1, S2, SFEATS = randn(16, 4), randn(16, 4), randn(16, 2, 4)
SLABELS = np.array([0, 1, 2, 0, 1, 2, 3, 3, 0, 4, 4, 5, 1, 6, 7, 7])
SHARDED = {
    "nt_xent": (functools.partial(C.nt_xent, temperature=T), (S1, S2),
                (P("data"), P("data"))),
    "clip": (functools.partial(C.clip, temperature=T), (S1, S2),
             (P("data"), P("data"))),
    "supcon": (lambda f, labels, **kw: C.supcon(f, labels, temperature=T,
                                                **kw),
               (SFEATS, SLABELS), (P("data"), P("data"))),
}


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_blockwise_under_shard_map_equals_dense_single_device(name):
  loss, args, specs = SHARDED[name]
  local = functools.partial(loss, axis_name="data",
                            implementation="blockwise", block_size=5)

  def mean(*a):
    return jax.shard_map(lambda *x: local(*x)[None], mesh=MESH,
                         in_specs=specs, out_specs=P("data"))(*a).mean()

  value, grad = jax.jit(jax.value_and_grad(mean))(*args)
  ref_value, ref_grad = jax.value_and_grad(
      functools.partial(loss, implementation="dense"))(*args)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("specs", [(P(), P("data")), (P("data"), P())],
                         ids=["replicated_queries", "replicated_keys"])
def test_logsumexp_shard_map_with_one_replicated_input(specs):
  # The custom VJP must return a replicated input's cotangent as replicated
  # (psum over devices), as plain JAX autodiff of the dense version does.
  q, k = randn(16, 3), randn(16, 3)

  def per_device(lse_fn):
    return jax.shard_map(lambda q, k: lse_fn(q, k)[None], mesh=MESH,
                         in_specs=specs, out_specs=P("data"))

  blockwise = per_device(functools.partial(B.blockwise_logsumexp,
                                           block_size=3))
  dense = per_device(B.dense_logsumexp)
  np.testing.assert_allclose(jax.jit(blockwise)(q, k), dense(q, k), rtol=1e-6,
                             atol=1e-7)  # float32 rounding near zero
  weights = randn(8, 16 if specs[0] == P() else 2)
  got, ref = (jax.jit(jax.grad(lambda q, k, f=f: (weights * f(q, k)).sum(),
                               (0, 1)))(q, k) for f in (blockwise, dense))
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- memory structure ---


def _largest_intermediate(jaxpr) -> int:
  """Most elements of any value in a jaxpr, nested jaxprs included."""
  def sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
      yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
      yield value
    elif isinstance(value, (tuple, list)):
      for v in value:
        yield from sub_jaxprs(v)

  largest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
    for param in eqn.params.values():
      for sub in sub_jaxprs(param):
        largest = max(largest, _largest_intermediate(sub))
  return largest


@pytest.mark.parametrize("name", ["nt_xent", "clip", "supcon"])
def test_blockwise_never_builds_the_similarity_matrix(name):
  n, dim, block = 64, 4, 8
  if name == "supcon":
    args = (randn(n // 2, 2, dim), np.arange(n // 2) % 5)
    loss = lambda impl, f, labels: C.supcon(f, labels, implementation=impl,
                                            block_size=block)
  else:
    args = (randn(n // 2, dim), randn(n // 2, dim))
    fn = getattr(C, name)
    loss = lambda impl, a, b: fn(a, b, implementation=impl, block_size=block)
  rows = n // 2 if name == "clip" else n  # anchors = keys of one softmax

  def largest(impl):
    grad = jax.value_and_grad(functools.partial(loss, impl))
    return _largest_intermediate(jax.make_jaxpr(grad)(*args).jaxpr)

  # The dense path holds the [rows, rows] logits (the check can fail) ...
  assert largest("dense") >= rows * rows
  # ... the blockwise one at most [rows, block] blocks, forward and backward.
  assert largest("blockwise") <= rows * max(block, dim)


def test_auto_switches_on_logits_size(monkeypatch):
  assert not B.use_blockwise("auto", 4096, 4096)  # exactly 2**24 elements
  assert B.use_blockwise("auto", 4097, 4096)
  assert B.use_blockwise("blockwise", 2, 2)
  assert not B.use_blockwise("dense", 10**6, 10**6)

  def has_scan(implementation):
    jaxpr = jax.make_jaxpr(functools.partial(
        C.nt_xent, implementation=implementation))(Z1, Z2)
    return "scan" in str(jaxpr)

  assert not has_scan("auto")
  monkeypatch.setattr(B, "AUTO_DENSE_MAX_ELEMENTS", 100)  # 20 x 20 > 100
  assert has_scan("auto")


@pytest.mark.parametrize("block_size", [0, -3, 2.5, True, None])
def test_bad_block_size(block_size):
  with pytest.raises(ValueError, match="`block_size`"):
    B.blockwise_logsumexp(Q, K, block_size=block_size)
  with pytest.raises(ValueError, match="`block_size`"):
    C.clip(Z1, Z2, implementation="blockwise", block_size=block_size)


def test_bad_implementation_and_shapes():
  with pytest.raises(ValueError, match="`implementation`"):
    C.supcon(FEATS, LABELS, implementation="flash")
  with pytest.raises(ValueError, match="`k`"):
    B.blockwise_logsumexp(Q, randn(5, 4))
  with pytest.raises(ValueError, match="`q`"):
    B.blockwise_logsumexp(Q[0], K)
