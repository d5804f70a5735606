"""ssljax.losses.contrastive against numpy loops over the papers' formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from ssljax.losses import contrastive as C

RNG = np.random.default_rng(0)


def randn(*shape):
  return RNG.normal(size=shape).astype(np.float32)


# ------------------------------------------------------ numpy references ---


def np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))


def np_lse(values):
  values = np.asarray(values, np.float64)
  m = values.max()
  return m + np.log(np.exp(values - m).sum())


def ref_nt_xent(z1, z2, t):
  z = np_normalize(np.concatenate([z1, z2]))
  n2 = len(z)
  total = 0.0
  for i in range(n2):
    pos = (i + n2 // 2) % n2
    others = [z[i] @ z[j] / t for j in range(n2) if j != i]
    total += np_lse(others) - z[i] @ z[pos] / t
  return total / n2


def ref_dcl(z1, z2, t, weighted=False, sigma=0.5):
  """Yeh et al. 2022, eq. 6: the positive left out of the denominator; DCLW
  weights it by w = 2 − N·softmax_n(z1_n·z2_n / σ) (a constant)."""
  z = np_normalize(np.concatenate([z1, z2]))
  n = len(z1)
  paired = np.array([z[k] @ z[k + n] for k in range(n)]) / sigma
  vmf = np.exp(paired - paired.max()) / np.exp(paired - paired.max()).sum()
  total = 0.0
  for i in range(2 * n):
    pos = (i + n) % (2 * n)
    w = 2 - n * vmf[i % n] if weighted else 1.0
    negatives = [z[i] @ z[j] / t for j in range(2 * n) if j not in (i, pos)]
    total += np_lse(negatives) - w * z[i] @ z[pos] / t
  return total / (2 * n)


def ref_info_nce(q, p, negatives, t):
  q, p, negatives = (np.asarray(x, np.float64) for x in (q, p, negatives))
  total = 0.0
  for b in range(len(q)):
    negs = negatives if negatives.ndim == 2 else negatives[b]
    logits = [q[b] @ p[b] / t] + [q[b] @ n / t for n in negs]
    total += np_lse(logits) - logits[0]
  return total / len(q)


def ref_nnclr(z1, z2, support, t):
  z1, z2, support = np_normalize(z1), np_normalize(z2), np_normalize(support)
  total = 0.0
  for i in range(len(z1)):
    best = max(range(len(support)), key=lambda s: z1[i] @ support[s])
    logits = [support[best] @ z2[k] / t for k in range(len(z2))]
    total += np_lse(logits) - logits[i]
  return total / len(z1)


def ref_supcon(features, labels, t):
  b, v, d = features.shape
  z = np_normalize(features).reshape(b * v, d)
  lab = np.repeat(labels, v)
  losses = []
  for i in range(b * v):
    others = [j for j in range(b * v) if j != i]
    positives = [j for j in others if lab[j] == lab[i]]
    if not positives:
      continue
    denominator = np_lse([z[i] @ z[a] / t for a in others])
    losses.append(-np.mean([z[i] @ z[p] / t - denominator for p in positives]))
  return np.mean(losses) if losses else 0.0


def ref_clip(a, b, t):
  a, b = np_normalize(a), np_normalize(b)
  n = len(a)
  logits = np.array([[a[i] @ b[j] / t for j in range(n)] for i in range(n)])
  rows = np.mean([np_lse(logits[i]) - logits[i, i] for i in range(n)])
  cols = np.mean([np_lse(logits[:, j]) - logits[j, j] for j in range(n)])
  return 0.5 * (rows + cols)


def ref_bilinear(q, k, w):
  q, k, w = (np.asarray(x, np.float64) for x in (q, k, w))
  n = len(q)
  logits = [[q[i] @ w @ k[j] for j in range(n)] for i in range(n)]
  return np.mean([np_lse(logits[i]) - logits[i][i] for i in range(n)])


# ------------------------------------------------------------------ cases ---
# Each case: (loss with the tested hyper-parameters, float args, reference,
# argnums with a true gradient: moco and nnclr stop it through the others).

T = 0.3


def _cases():
  z1, z2 = randn(6, 5), randn(6, 5)
  feats, labels = randn(5, 2, 4), np.array([3, 1, 3, 7, 1])
  support = randn(9, 5)
  negs, negs3 = randn(7, 5), randn(6, 4, 5)
  w = randn(5, 3)
  key3 = randn(6, 3)
  return {
      "nt_xent": (functools.partial(C.nt_xent, temperature=T), (z1, z2),
                  lambda a, b: ref_nt_xent(a, b, T), (0, 1)),
      "dcl": (functools.partial(C.dcl, temperature=T), (z1, z2),
              lambda a, b: ref_dcl(a, b, T), (0, 1)),
      "info_nce": (functools.partial(C.info_nce, temperature=T),
                   (z1, z2, negs), lambda *x: ref_info_nce(*x, T), (0, 1, 2)),
      "info_nce_per_query": (functools.partial(C.info_nce, temperature=T),
                             (z1, z2, negs3), lambda *x: ref_info_nce(*x, T),
                             (0, 1, 2)),
      "moco": (functools.partial(C.moco, temperature=T), (z1, z2, negs),
               lambda q, k, n: ref_info_nce(np_normalize(q), np_normalize(k),
                                            np_normalize(n), T), (0,)),
      "nnclr": (functools.partial(C.nnclr, temperature=T), (z1, z2, support),
                lambda *x: ref_nnclr(*x, T), (1,)),
      "supcon": (lambda f: C.supcon(f, labels, temperature=T), (feats,),
                 lambda f: ref_supcon(f, labels, T), (0,)),
      "clip": (functools.partial(C.clip, temperature=T), (z1, z2),
               lambda a, b: ref_clip(a, b, T), (0, 1)),
      "bilinear_info_nce": (C.bilinear_info_nce, (z1, key3, w), ref_bilinear,
                            (0, 1, 2)),
  }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
  loss, args, ref, _ = CASES[name]
  np.testing.assert_allclose(loss(*args), ref(*args), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_matches_eager(name):
  loss, args, _, _ = CASES[name]
  np.testing.assert_allclose(jax.jit(loss)(*args), loss(*args), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients(name):
  loss, args, _, argnums = CASES[name]
  args = [np.float64(a) for a in args]

  def of_differentiable(*xs):
    for i, x in zip(argnums, xs):
      args[i] = x
    return loss(*args)

  with jax.enable_x64(True):
    check_grads(jax.jit(of_differentiable), tuple(args[i] for i in argnums),
                order=1, modes=["rev"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_computes_in_float32(name):
  loss, args, _, _ = CASES[name]
  low = tuple(jnp.asarray(a, jnp.bfloat16) for a in args)
  value = loss(*low)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(
      value, loss(*(np.asarray(a, np.float32) for a in low)), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_vectors_finite(name):
  loss, args, _, _ = CASES[name]
  zeros = tuple(np.zeros_like(a) for a in args)
  value, grads = jax.jit(jax.value_and_grad(loss, argnums=range(len(zeros))))(
      *zeros)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("t", [1e-4, 1e4])
@pytest.mark.parametrize("name", ["nt_xent", "clip", "info_nce", "moco",
                                  "nnclr", "supcon", "dcl"])
def test_extreme_temperatures_finite(name, t):
  z1, z2 = randn(4, 3), randn(4, 3)
  call = {
      "nt_xent": lambda a, b: C.nt_xent(a, b, temperature=t),
      "dcl": lambda a, b: C.dcl(a, b, temperature=t, weighted=True),
      "clip": lambda a, b: C.clip(a, b, temperature=t),
      "info_nce": lambda a, b: C.info_nce(a, b, a[::-1], temperature=t),
      "moco": lambda a, b: C.moco(a, b, b[::-1], temperature=t),
      "nnclr": lambda a, b: C.nnclr(a, b, b, temperature=t),
      "supcon": lambda a, b: C.supcon(jnp.stack([a, b], 1),
                                      jnp.array([0, 1, 0, 1]),
                                      temperature=t),
  }[name]
  value, grads = jax.jit(jax.value_and_grad(call, argnums=(0, 1)))(z1, z2)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in grads)
  if name == "nt_xent":
    np.testing.assert_allclose(value, ref_nt_xent(z1, z2, t), rtol=1e-4)


# ------------------------------------------------------------------ DCL ---


def test_dclw_matches_reference_and_weights_without_gradient():
  z1, z2 = randn(6, 5), randn(6, 5)
  loss = functools.partial(C.dcl, temperature=T, weighted=True, sigma=0.3)
  np.testing.assert_allclose(loss(z1, z2), ref_dcl(z1, z2, T, True, 0.3),
                             rtol=1e-5)
  np.testing.assert_allclose(jax.jit(loss)(z1, z2), loss(z1, z2), rtol=1e-6)
  # The weights are constants: the gradient is that of the loss with the
  # weights held at their value, checked against finite differences.
  z = np_normalize(np.concatenate([z1, z2]))
  paired = np.array([z[k] @ z[k + 6] for k in range(6)]) / 0.3
  held = np.tile(2 - 6 * np.exp(paired) / np.exp(paired).sum(), 2)

  def with_held_weights(a, b):
    a, b = (x / jnp.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    anchors, others = jnp.concatenate([a, b]), jnp.concatenate([b, a])
    logits = anchors @ jnp.concatenate([a, b]).T / T
    n2 = len(anchors)
    mask = (jnp.eye(n2) + jnp.eye(n2, k=6) + jnp.eye(n2, k=-6)) > 0
    lse = jax.nn.logsumexp(jnp.where(mask, -jnp.inf, logits), axis=1)
    return jnp.mean(lse - held * jnp.sum(anchors * others, axis=1) / T)

  with jax.enable_x64(True):
    args = (np.float64(z1), np.float64(z2))
    check_grads(with_held_weights, args, order=1, modes=["rev"])
    for g, want in zip(jax.grad(loss, argnums=(0, 1))(*args),
                       jax.grad(with_held_weights, argnums=(0, 1))(*args)):
      np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-10)
  value = loss(jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16))
  assert value.dtype == jnp.float32


def test_dcl_is_nt_xent_without_the_positive_in_the_denominator():
  # Every term drops log(1 + exp(s_ip/T) / Σ_negatives exp(s_ij/T)) > 0.
  z1, z2 = randn(5, 4), randn(5, 4)
  assert C.dcl(z1, z2, temperature=T) < C.nt_xent(z1, z2, temperature=T)
  # A hand case: z = [e1, e2, e1, e2], T = 0.5: each anchor's two negatives
  # are orthogonal (logits 0), its positive at logit 2: log 2 − 2.
  e = jnp.eye(2)
  np.testing.assert_allclose(C.dcl(e, e, temperature=0.5), np.log(2) - 2,
                             rtol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("block_size", [3, 7, 1024])
def test_dcl_blockwise_equals_dense(weighted, block_size):
  z1, z2 = randn(10, 6), randn(10, 6)
  loss = functools.partial(C.dcl, temperature=T, weighted=weighted)
  blockwise = jax.jit(jax.value_and_grad(functools.partial(
      loss, implementation="blockwise", block_size=block_size), (0, 1)))
  dense = jax.value_and_grad(functools.partial(loss, implementation="dense"),
                             (0, 1))
  for got, want in zip(jax.tree.leaves(blockwise(z1, z2)),
                       jax.tree.leaves(dense(z1, z2))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------ hand-worked cases ---


def test_nt_xent_hand_case():
  # z = [e1, e2, e1, e2]: each anchor sees its positive at 1/T = 2 and two
  # orthogonal rows at 0, so every term is log(2 + e^2) - 2.
  e = jnp.eye(2)
  np.testing.assert_allclose(C.nt_xent(e, e, temperature=0.5),
                             np.log(2 + np.e**2) - 2, rtol=1e-6)


def test_info_nce_hand_case():
  # Positive logit 1, negatives 0 and -1: log(e + 1 + 1/e) - 1.
  q = jnp.array([[1.0, 0.0]])
  value = C.info_nce(q, q, jnp.array([[0.0, 1.0], [-1.0, 0.0]]))
  np.testing.assert_allclose(value, np.log(np.e + 1 + 1 / np.e) - 1,
                             rtol=1e-6)


def test_info_nce_does_not_normalise():
  q = jnp.array([[2.0, 0.0]])
  # Logits 4 (positive) and 0: a normalising loss would give log(1 + e^-1).
  np.testing.assert_allclose(
      C.info_nce(q, q, jnp.array([[0.0, 1.0]])), np.log1p(np.exp(-4.0)),
      rtol=1e-5)


def test_info_nce_shared_equals_broadcast_per_query():
  q, p, negs = randn(3, 4), randn(3, 4), randn(5, 4)
  np.testing.assert_allclose(
      C.info_nce(q, p, negs),
      C.info_nce(q, p, np.broadcast_to(negs, (3, 5, 4))), rtol=1e-6)


def test_supcon_with_instance_labels_is_simclr():
  feats = randn(6, 2, 4)
  np.testing.assert_allclose(
      C.supcon(feats, jnp.arange(6), temperature=0.2),
      C.nt_xent(feats[:, 0], feats[:, 1], temperature=0.2), rtol=1e-6)


def test_supcon_skips_anchors_without_positives():
  # V = 1: example 2's label is unique, so its anchor has no positive.
  feats = randn(4, 1, 3)
  labels = np.array([0, 0, 5, 0])
  value = C.supcon(feats, labels, temperature=0.5)
  np.testing.assert_allclose(value, ref_supcon(feats, labels, 0.5), rtol=1e-5)
  assert C.supcon(feats, np.arange(4), temperature=0.5) == 0.0


def test_supcon_label_values_only_matter_through_equality():
  feats = randn(5, 2, 3)
  a = C.supcon(feats, np.array([0, 1, 0, 2, 1]))
  b = C.supcon(feats, np.array([-7, 1000, -7, 3, 1000]))
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_moco_stops_gradient_through_key_and_queue():
  q, k, queue = randn(3, 4), randn(3, 4), randn(5, 4)
  dq, dk, dqueue = jax.jit(jax.grad(C.moco, argnums=(0, 1, 2)))(q, k, queue)
  assert np.abs(dq).max() > 0
  assert not np.any(dk) and not np.any(dqueue)


def test_nnclr_gradient_only_through_z2():
  z1, z2, support = randn(4, 3), randn(4, 3), randn(6, 3)
  d1, d2, ds = jax.jit(jax.grad(C.nnclr, argnums=(0, 1, 2)))(z1, z2, support)
  assert not np.any(d1) and not np.any(ds)
  assert np.abs(d2).max() > 0


def test_nnclr_uses_nearest_support_row():
  # z1's rows are nearest to support rows 1 (e1) and 0 (e2), so the anchors
  # are the identity and the logits are z2's normalised coordinates / T.
  z1 = jnp.array([[1.0, 0.1], [0.1, 1.0]])
  support = jnp.array([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
  z2 = randn(2, 2)
  logits = np_normalize(z2).T / 0.5
  expected = np.mean([np_lse(logits[i]) - logits[i, i] for i in range(2)])
  np.testing.assert_allclose(C.nnclr(z1, z2, support, temperature=0.5),
                             expected, rtol=1e-5)


def test_clip_learnt_temperature_gradient():
  a, b = randn(4, 3), randn(4, 3)
  with jax.enable_x64(True):
    check_grads(
        jax.jit(lambda t: C.clip(np.float64(a), np.float64(b), temperature=t)),
        (np.float64(0.3),), order=1, modes=["rev"])


def test_bilinear_keeps_gradient_into_key():
  q, k, w = randn(3, 2), randn(3, 2), randn(2, 2)
  assert np.abs(jax.grad(C.bilinear_info_nce, argnums=1)(q, k, w)).max() > 0


# ------------------------------------------------------------- bad inputs ---

x2, x3 = np.ones((4, 3), np.float32), np.ones((4, 2, 3), np.float32)
BAD = [
    (lambda: C.nt_xent(x3, x3), "z1"),
    (lambda: C.nt_xent(x2, np.ones((5, 3))), "z2"),
    (lambda: C.nt_xent(x2, np.ones((4, 2))), "z2"),
    (lambda: C.nt_xent(x2, x2, temperature=0.0), "temperature"),
    (lambda: C.nt_xent(x2, x2, temperature=-1.0), "temperature"),
    (lambda: C.nt_xent(x2, x2, implementation="fast"), "implementation"),
    (lambda: C.nt_xent(x2, x2, block_size=0), "block_size"),
    (lambda: C.dcl(x3, x3), "z1"),
    (lambda: C.dcl(x2, np.ones((5, 3))), "z2"),
    (lambda: C.dcl(x2, x2, temperature=0.0), "temperature"),
    (lambda: C.dcl(x2, x2, weighted=True, sigma=-1.0), "sigma"),
    (lambda: C.dcl(x2, x2, implementation="fast"), "implementation"),
    (lambda: C.info_nce(x2, x2, np.ones((4, 2))), "negatives"),
    (lambda: C.info_nce(x2, x2, np.ones((5, 2, 3))), "negatives"),
    (lambda: C.info_nce(x2, x2, np.ones(3)), "negatives"),
    (lambda: C.info_nce(x2, np.ones((3, 3)), x2), "positive"),
    (lambda: C.info_nce(x2, x2, x3, implementation="blockwise"),
     "implementation"),
    (lambda: C.info_nce(x2, x2, x2, temperature=0), "temperature"),
    (lambda: C.moco(x2, x2, x3), "queue"),
    (lambda: C.moco(x2, np.ones((4, 2)), x2), "key"),
    (lambda: C.moco(x2, x2, x2, temperature=-0.2), "temperature"),
    (lambda: C.nnclr(x2, x2, np.ones((6, 2))), "support"),
    (lambda: C.nnclr(x2, x3, x2), "z2"),
    (lambda: C.nnclr(x2, x2, x2, temperature=0.0), "temperature"),
    (lambda: C.supcon(x2, np.zeros(4, int)), "features"),
    (lambda: C.supcon(x3, np.zeros(5, int)), "labels"),
    (lambda: C.supcon(x3, np.zeros((4, 1), int)), "labels"),
    (lambda: C.supcon(x3, np.zeros(4)), "labels"),
    (lambda: C.supcon(x3, np.zeros(4, int), temperature=0.0), "temperature"),
    (lambda: C.supcon(x3, np.zeros(4, int), block_size=-2), "block_size"),
    (lambda: C.clip(x2, np.ones((4, 4))), "b"),
    (lambda: C.clip(x3, x3), "a"),
    (lambda: C.clip(x2, x2, implementation=None), "implementation"),
    (lambda: C.bilinear_info_nce(x2, np.ones((5, 3)), np.eye(3)), "key"),
    (lambda: C.bilinear_info_nce(x2, x2, np.eye(2)), "w"),
    (lambda: C.bilinear_info_nce(x3, x2, np.eye(3)), "query"),
]


@pytest.mark.parametrize("call,arg", BAD, ids=[f"{i}-{a}" for i, (_, a)
                                               in enumerate(BAD)])
def test_bad_inputs_raise(call, arg):
  with pytest.raises(ValueError, match=f"`{arg}`"):
    call()


# ------------------------------------------------------------ multi-device ---
# 16 rows over 8 devices: 2 local rows per device.

MESH = jax.make_mesh((8,), ("data",),
                     axis_types=(jax.sharding.AxisType.Auto,))

_LABELS = np.array([0, 1, 2, 0, 1, 2, 3, 3, 0, 4, 4, 5, 1, 6, 7, 7])
# name: (loss(*args, axis_name=...), args, one spec per arg, argnums to
# differentiate).
SHARDED = {
    "nt_xent": (functools.partial(C.nt_xent, temperature=T),
                (randn(16, 5), randn(16, 5)), (P("data"), P("data")), (0, 1)),
    "dcl": (functools.partial(C.dcl, temperature=T),
            (randn(16, 5), randn(16, 5)), (P("data"), P("data")), (0, 1)),
    # DCLW's weights are a softmax over the global batch.
    "dclw": (functools.partial(C.dcl, temperature=T, weighted=True),
             (randn(16, 5), randn(16, 5)), (P("data"), P("data")), (0, 1)),
    "nnclr": (functools.partial(C.nnclr, temperature=T),
              (randn(16, 5), randn(16, 5), randn(12, 5)),
              (P("data"), P("data"), P()), (0, 1, 2)),
    # V = 1 with singleton labels 5 and 6: devices count different anchors.
    "supcon": (C.supcon, (randn(16, 1, 4), _LABELS), (P("data"), P("data")),
               (0,)),
    "supcon_two_views": (C.supcon, (randn(16, 2, 4), _LABELS),
                         (P("data"), P("data")), (0,)),
    "clip": (functools.partial(C.clip, temperature=T),
             (randn(16, 5), randn(16, 5)), (P("data"), P("data")), (0, 1)),
}


def per_device_mean(loss, specs):
  """Mean over devices of the per-device loss under shard_map + axis_name."""
  def mean(*args):
    per = jax.shard_map(lambda *a: loss(*a, axis_name="data")[None],
                        mesh=MESH, in_specs=specs, out_specs=P("data"))(*args)
    return per.mean()
  return mean


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_shard_map_axis_name_matches_single_device(name):
  loss, args, specs, argnums = SHARDED[name]
  value, grads = jax.jit(jax.value_and_grad(per_device_mean(loss, specs),
                                            argnums))(*args)
  ref_value, ref_grads = jax.value_and_grad(loss, argnums)(*args)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_global_view_sharded_jit_matches_unsharded(name):
  loss, args, specs, _ = SHARDED[name]
  placed = [jax.device_put(a, NamedSharding(MESH, s))
            for a, s in zip(args, specs)]
  np.testing.assert_allclose(jax.jit(loss)(*placed), loss(*args), rtol=1e-5)


def test_supcon_reference_on_sharded_case():
  # The V = 1 sharded case really has anchors without positives.
  feats = SHARDED["supcon"][1][0]
  np.testing.assert_allclose(C.supcon(feats, _LABELS),
                             ref_supcon(feats, _LABELS, 0.1), rtol=1e-5)
