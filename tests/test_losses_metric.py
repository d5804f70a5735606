"""ssljax.losses.metric against numpy loops over the papers' formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from ssljax.losses import metric as M

RNG = np.random.default_rng(0)


def randn(*shape):
  return RNG.normal(size=shape).astype(np.float32)


# Labels with classes of size 1 (anchor 7), 2, 3 and 4.
LABELS = np.array([0, 1, 0, 2, 2, 1, 0, 3, 2, 2], np.int32)


# ------------------------------------------------------ numpy references ---


def np_dist(x, squared=True):
  x = np.asarray(x, np.float64)
  b = len(x)
  d = np.zeros((b, b))
  for i in range(b):
    for j in range(b):
      d[i, j] = np.sum((x[i] - x[j]) ** 2)
  return d if squared else np.sqrt(d)


def np_lse(values):
  values = np.asarray(values, np.float64)
  m = values.max()
  return m + np.log(np.exp(values - m).sum())


def np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=0 if x.ndim == 1 else -1, keepdims=True)


def ref_contrastive(x1, x2, same, margin):
  total = 0.0
  for a, b, s in zip(np.float64(x1), np.float64(x2), np.float64(same)):
    d = np.linalg.norm(a - b)
    total += s * d ** 2 + (1 - s) * max(0.0, margin - d) ** 2
  return total / len(x1)


def ref_triplet(a, p, n, margin):
  total = 0.0
  for ai, pi, ni in zip(np.float64(a), np.float64(p), np.float64(n)):
    total += max(0.0, np.sum((ai - pi) ** 2) - np.sum((ai - ni) ** 2) + margin)
  return total / len(a)


def _roles(labels):
  b = len(labels)
  pos = [[p for p in range(b) if p != a and labels[p] == labels[a]]
         for a in range(b)]
  neg = [[n for n in range(b) if labels[n] != labels[a]] for a in range(b)]
  return pos, neg


def ref_batch_hard(x, labels, margin, squared=True):
  d = np_dist(x, squared)
  pos, neg = _roles(labels)
  losses = [max(0.0, margin + max(d[a, p] for p in pos[a])
                - min(d[a, n] for n in neg[a]))
            for a in range(len(x)) if pos[a] and neg[a]]
  return np.mean(losses) if losses else 0.0


def ref_batch_all(x, labels, margin, squared=True):
  d = np_dist(x, squared)
  pos, neg = _roles(labels)
  losses = [margin + d[a, p] - d[a, n]
            for a in range(len(x)) for p in pos[a] for n in neg[a]]
  active = [v for v in losses if v > 0]
  return np.mean(active) if active else 0.0


def ref_semi_hard(x, labels, margin, squared=True):
  d = np_dist(x, squared)
  pos, neg = _roles(labels)
  losses = []
  for a in range(len(x)):
    if not neg[a]:
      continue
    for p in pos[a]:
      farther = [d[a, n] for n in neg[a] if d[a, n] > d[a, p]]
      d_neg = min(farther) if farther else max(d[a, n] for n in neg[a])
      losses.append(max(0.0, margin + d[a, p] - d_neg))
  return np.mean(losses) if losses else 0.0


REF_MINING = {"batch_hard": ref_batch_hard, "batch_all": ref_batch_all,
              "semi_hard": ref_semi_hard}


def ref_n_pair(a, p, l2_reg=0.0):
  a, p = np.float64(a), np.float64(p)
  total = 0.0
  for i in range(len(a)):
    total += np.log(1 + sum(np.exp(a[i] @ p[j] - a[i] @ p[i])
                            for j in range(len(a)) if j != i))
  reg = np.mean(np.sum(a ** 2, -1)) + np.mean(np.sum(p ** 2, -1))
  return total / len(a) + 0.25 * l2_reg * reg


def ref_lifted(x, labels, margin):
  d = np_dist(x, squared=False)
  b = len(x)
  terms = []
  for i in range(b):
    for j in range(i + 1, b):  # unordered positive pairs, as in the paper
      if labels[i] != labels[j]:
        continue
      negs = ([margin - d[i, k] for k in range(b) if labels[k] != labels[i]]
              + [margin - d[j, l] for l in range(b) if labels[l] != labels[j]])
      if not negs:
        continue
      terms.append(max(0.0, np_lse(negs) + d[i, j]) ** 2)
  return sum(terms) / (2 * len(terms)) if terms else 0.0


def ref_snn(x, labels, t):
  d = np_dist(x)
  b = len(x)
  losses = []
  for i in range(b):
    same = [-d[i, j] / t for j in range(b) if j != i and labels[j] == labels[i]]
    if not same:
      continue
    others = [-d[i, k] / t for k in range(b) if k != i]
    losses.append(-(np_lse(same) - np_lse(others)))
  return np.mean(losses) if losses else 0.0


def ref_center(x, labels, centers):
  x, centers = np.float64(x), np.float64(centers)
  return np.mean([0.5 * np.sum((x[i] - centers[labels[i]]) ** 2)
                  for i in range(len(x))])


def ref_center_update(centers, x, labels, alpha):
  centers, x = np.float64(centers), np.float64(x)
  new = centers.copy()
  for j in range(len(centers)):
    members = [i for i in range(len(x)) if labels[i] == j]
    delta = sum((centers[j] - x[i] for i in members), np.zeros_like(centers[j]))
    new[j] = centers[j] - alpha * delta / (1 + len(members))
  return new


def _angles(x, w):
  """[B, C] angles between rows of x and columns of w."""
  theta = np.zeros((len(x), w.shape[1]))
  for i in range(len(x)):
    for j in range(w.shape[1]):
      cos = np_normalize(x[i]) @ np_normalize(w[:, j])
      theta[i, j] = np.arccos(np.clip(cos, -1.0, 1.0))
  return theta


def _ref_margin_softmax(x, labels, w, scales, psi):
  theta = _angles(x, w)
  total = 0.0
  for i in range(len(x)):
    logits = [scales[i] * (psi(theta[i, j]) if j == labels[i]
                           else np.cos(theta[i, j]))
              for j in range(w.shape[1])]
    total += np_lse(logits) - logits[labels[i]]
  return total / len(x)


def ref_sphereface(x, labels, w, m, scale=None):
  def psi(theta):
    for k in range(m):
      if k * np.pi / m <= theta <= (k + 1) * np.pi / m:
        return (-1) ** k * np.cos(m * theta) - 2 * k
    raise AssertionError(theta)
  x = np.float64(x)
  scales = (np.linalg.norm(x, axis=-1) if scale is None
            else np.full(len(x), scale))
  return _ref_margin_softmax(x, labels, np.float64(w), scales, psi)


def ref_cosface(x, labels, w, scale, margin):
  return _ref_margin_softmax(np.float64(x), labels, np.float64(w),
                             np.full(len(x), scale),
                             lambda t: np.cos(t) - margin)


def ref_arcface(x, labels, w, scale, margin):
  def psi(theta):
    if theta + margin < np.pi:
      return np.cos(theta + margin)
    return np.cos(theta) - margin * np.sin(margin)
  return _ref_margin_softmax(np.float64(x), labels, np.float64(w),
                             np.full(len(x), scale), psi)


# ------------------------------------------------------------- test cases ---
# (name, loss(*float_args), reference(*float_args), float args): labels and
# hyper-parameters are closed over so that the same cases serve the value,
# jit, bf16, gradient and zero-input tests.

X = randn(10, 5)
W = randn(5, 4)
MARGIN_LABELS = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1], np.int32)


def _cases():
  x1, x2 = randn(6, 4), randn(6, 4)
  same = np.array([1, 0, 1, 0, 0, 1], np.float32)
  a, p, n = randn(5, 3), randn(5, 3), randn(5, 3)
  cases = [
      ("contrastive_pair",
       lambda u, v: M.contrastive_pair(u, v, same, margin=3.0),
       lambda u, v: ref_contrastive(u, v, same, 3.0), (x1, x2)),
      ("triplet", lambda u, v, w: M.triplet(u, v, w, margin=1.0),
       lambda u, v, w: ref_triplet(u, v, w, 1.0), (a, p, n)),
      ("n_pair", lambda u, v: M.n_pair(u, v, l2_reg=0.1),
       lambda u, v: ref_n_pair(u, v, 0.1), (x1, x2)),
      ("lifted_structured",
       lambda u: M.lifted_structured(u, LABELS, margin=2.0),
       lambda u: ref_lifted(u, LABELS, 2.0), (X,)),
      ("soft_nearest_neighbour",
       lambda u: M.soft_nearest_neighbour(u, LABELS, temperature=2.0),
       lambda u: ref_snn(u, LABELS, 2.0), (X,)),
      ("center_loss", lambda u, c: M.center_loss(u, MARGIN_LABELS, c),
       lambda u, c: ref_center(u, MARGIN_LABELS, c), (X, W.T)),
      ("sphereface",
       lambda u, w: M.sphereface(u, MARGIN_LABELS, w, margin=3),
       lambda u, w: ref_sphereface(u, MARGIN_LABELS, w, 3), (X, W)),
      ("sphereface_scaled",
       lambda u, w: M.sphereface(u, MARGIN_LABELS, w, margin=2, scale=3.0),
       lambda u, w: ref_sphereface(u, MARGIN_LABELS, w, 2, 3.0), (X, W)),
      ("cosface",
       lambda u, w: M.cosface(u, MARGIN_LABELS, w, scale=4.0, margin=0.3),
       lambda u, w: ref_cosface(u, MARGIN_LABELS, w, 4.0, 0.3), (X, W)),
      ("arcface",
       lambda u, w: M.arcface(u, MARGIN_LABELS, w, scale=4.0, margin=0.5),
       lambda u, w: ref_arcface(u, MARGIN_LABELS, w, 4.0, 0.5), (X, W)),
      # m = 2.5 puts some targets past π − m: the insightface fallback.
      ("arcface_fallback",
       lambda u, w: M.arcface(u, MARGIN_LABELS, w, scale=2.0, margin=2.5),
       lambda u, w: ref_arcface(u, MARGIN_LABELS, w, 2.0, 2.5), (X, W)),
  ]
  for mining in M.MINING:
    for squared in (True, False):
      cases.append((
          f"batch_triplet_{mining}_{squared}",
          lambda u, mining=mining, squared=squared: M.batch_triplet(
              u, LABELS, margin=1.0, mining=mining, squared=squared),
          lambda u, mining=mining, squared=squared: REF_MINING[mining](
              u, LABELS, 1.0, squared), (X,)))
  return cases


CASES = _cases()
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,loss,ref,args", CASES, ids=IDS)
def test_matches_numpy_reference(name, loss, ref, args):
  expected = ref(*args)
  assert expected > 1e-3, "test point must make the loss active"
  np.testing.assert_allclose(loss(*args), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,loss,ref,args", CASES, ids=IDS)
def test_jit_matches_eager(name, loss, ref, args):
  np.testing.assert_allclose(jax.jit(loss)(*args), loss(*args), rtol=1e-6)


@pytest.mark.parametrize("name,loss,ref,args", CASES, ids=IDS)
def test_bf16_computes_in_f32(name, loss, ref, args):
  low = [jnp.asarray(a, jnp.bfloat16) for a in args]
  out = loss(*low)
  assert out.dtype == jnp.float32
  upcast = loss(*[a.astype(jnp.float32) for a in low])
  np.testing.assert_allclose(out, upcast, rtol=1e-6)
  if "semi_hard" not in name and "batch_all" not in name:
    # Those two select among near-tied triplets, which bf16 rounding can
    # reorder; the others move by about the rounding error.
    np.testing.assert_allclose(out, loss(*args), rtol=0.05)


@pytest.mark.parametrize("name,loss,ref,args", CASES, ids=IDS)
def test_gradients_float64(name, loss, ref, args):
  # Random points: no hinge, max/min or ArcFace branch sits within the
  # finite-difference step of a switch.
  with jax.enable_x64(True):
    check_grads(jax.jit(loss), [np.float64(a) for a in args], order=1,
                modes=["rev"])


@pytest.mark.parametrize("name,loss,ref,args", CASES, ids=IDS)
def test_zero_inputs_finite(name, loss, ref, args):
  zeros = [np.zeros_like(a) for a in args]
  value, grads = jax.jit(jax.value_and_grad(
      loss, argnums=tuple(range(len(args)))))(*zeros)
  assert np.isfinite(value)
  for g in grads:
    assert np.all(np.isfinite(g))


# ------------------------------------------------------ hand-worked cases ---


def test_contrastive_pair_hand_and_bool_same():
  x1 = np.zeros((3, 2), np.float32)
  x2 = np.array([[3, 4], [0.6, 0], [2, 0]], np.float32)
  # similar: 25; dissimilar inside the margin: (1 − .6)²; outside: 0.
  expected = (25 + 0.16 + 0) / 3
  for same in (np.array([True, False, False]), np.array([1, 0, 0]),
               np.array([1.0, 0.0, 0.0])):
    np.testing.assert_allclose(M.contrastive_pair(x1, x2, same), expected,
                               rtol=1e-6)


def test_contrastive_pair_identical_dissimilar_pair_gradient_finite():
  x = np.ones((2, 3), np.float32)
  g = jax.grad(M.contrastive_pair)(x, x, np.array([0, 0]))
  assert np.all(np.isfinite(g))


def test_triplet_hand():
  a = np.zeros((2, 2), np.float32)
  p = np.array([[0.5, 0], [1, 0]], np.float32)
  n = np.array([[0, 0.6], [0, 3]], np.float32)
  # max(0, .25 − .36 + .2) = .09 and max(0, 1 − 9 + .2) = 0.
  np.testing.assert_allclose(M.triplet(a, p, n), 0.045, rtol=1e-5)


ONE_D = np.array([[0.0], [1.0], [3.0], [3.5]], np.float32)
ONE_D_LABELS = np.array([0, 0, 1, 1])


def test_batch_hard_hand_1d():
  # Euclidean, margin 2, per anchor (hardest positive, hardest negative):
  # x=0: (1, 3) -> 0; x=1: (1, 2) -> 1; x=3: (.5, 2) -> .5; x=3.5: (.5, 2.5)
  # -> 0. Mean 1.5 / 4.
  out = M.batch_triplet(ONE_D, ONE_D_LABELS, margin=2.0, squared=False)
  np.testing.assert_allclose(out, 0.375, rtol=1e-5)
  # Squared, margin 5: 0, 5+1−4, 5+.25−4, 0.
  out = M.batch_triplet(ONE_D, ONE_D_LABELS, margin=5.0)
  np.testing.assert_allclose(out, 0.8125, rtol=1e-5)


def test_batch_all_hand_1d():
  # Squared, margin 5: of the 8 triplets only (1,0,2) = 2 and (2,3,1) = 1.25
  # are positive; the mean is over those two.
  out = M.batch_triplet(ONE_D, ONE_D_LABELS, margin=5.0, mining="batch_all")
  np.testing.assert_allclose(out, 1.625, rtol=1e-5)


def test_semi_hard_hand_1d():
  x = np.array([[0.0], [1.0], [0.5], [1.5], [5.0]], np.float32)
  labels = np.array([0, 0, 1, 1, 1])
  # Squared distances, margin 2, per positive pair (a, p): d_ap, chosen d_an.
  #   (0,1): 1, closest negative farther than 1 is 2.25        -> .75
  #   (1,0): 1, negatives .25, .25, 16 -> 16                   -> 0
  #   (2,3): 1, negatives .25, .25 all closer -> farthest .25  -> 2.75
  #   (2,4): 20.25, fallback .25                               -> 22
  #   (3,2): 1, negatives 2.25, .25 -> 2.25                    -> .75
  #   (3,4): 12.25, fallback 2.25                              -> 12
  #   (4,2): 20.25, negatives 25, 16 -> 25                     -> 0
  #   (4,3): 12.25, -> 16                                      -> 0
  out = M.batch_triplet(x, labels, margin=2.0, mining="semi_hard")
  np.testing.assert_allclose(out, 38.25 / 8, rtol=1e-5)
  np.testing.assert_allclose(out, ref_semi_hard(x, labels, 2.0), rtol=1e-5)


def test_n_pair_hand_and_is_diagonal_cross_entropy():
  a = np.eye(2, dtype=np.float32)
  np.testing.assert_allclose(M.n_pair(a, a), math.log1p(math.exp(-1)),
                             rtol=1e-6)
  x1, x2 = randn(4, 3), randn(4, 3)
  logits = x1 @ x2.T
  xent = -jax.nn.log_softmax(logits)[np.arange(4), np.arange(4)].mean()
  np.testing.assert_allclose(M.n_pair(x1, x2), xent, rtol=1e-5)
  reg = 0.25 * 0.5 * ((x1 ** 2).sum(-1).mean() + (x2 ** 2).sum(-1).mean())
  np.testing.assert_allclose(M.n_pair(x1, x2, l2_reg=0.5), xent + reg,
                             rtol=1e-5)


def test_lifted_structured_hand():
  x = np.array([[0.0], [1.0], [3.0]], np.float32)
  # One positive pair (0, 1): J = log(e^(1−3) + e^(1−2)) + 1.
  j = math.log(math.exp(-2) + math.exp(-1)) + 1
  np.testing.assert_allclose(M.lifted_structured(x, np.array([0, 0, 1])),
                             j ** 2 / 2, rtol=1e-5)


def test_lifted_structured_far_points_stable():
  x = np.array([[0.0], [1.0], [200.0], [-300.0]], np.float32)
  labels = np.array([0, 0, 1, 2])
  # exp(m − D) underflows for every negative; log-space keeps J = log-sum.
  out = M.lifted_structured(x, labels)
  np.testing.assert_allclose(out, ref_lifted(x, labels, 1.0), rtol=1e-5)


def test_soft_nearest_neighbour_hand():
  x = np.array([[0.0], [1.0], [2.0]], np.float32)
  # Anchor 0: log(1 + e^-3); anchor 1: log 2; anchor 2 has no partner.
  expected = (math.log1p(math.exp(-3)) + math.log(2)) / 2
  np.testing.assert_allclose(
      M.soft_nearest_neighbour(x, np.array([0, 0, 1])), expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1e-6, 1e6])
def test_soft_nearest_neighbour_extreme_temperatures(temperature):
  loss = lambda x: M.soft_nearest_neighbour(x, LABELS,
                                            temperature=temperature)
  value, grad = jax.value_and_grad(loss)(X)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  with jax.enable_x64(True):
    np.testing.assert_allclose(loss(np.float64(X)),
                               ref_snn(X, LABELS, temperature), rtol=1e-4)


def test_center_loss_hand_and_update():
  centers = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], np.float32)
  x = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]], np.float32)
  labels = np.array([0, 1, 0])
  np.testing.assert_allclose(M.center_loss(x, labels, centers), 4 / 3,
                             rtol=1e-6)
  # Class 0: Δ = ((0,0)−(0,2) + (0,0)−(2,0)) / 3; class 1 has its only
  # member on the center; class 2 is absent and keeps its center.
  new = M.center_loss_update(centers, x, labels, alpha=0.5)
  np.testing.assert_allclose(new, [[1 / 3, 1 / 3], [1, 1], [5, 5]],
                             rtol=1e-6)


def test_center_loss_update_reference_and_dtype():
  centers, x = randn(4, 5), X
  new = M.center_loss_update(centers, x, MARGIN_LABELS, alpha=0.3)
  np.testing.assert_allclose(
      new, ref_center_update(centers, x, MARGIN_LABELS, 0.3), rtol=1e-5,
      atol=1e-6)
  low = M.center_loss_update(jnp.asarray(centers, jnp.bfloat16), x,
                             MARGIN_LABELS)
  assert low.dtype == jnp.bfloat16


def test_sphereface_margin_one_is_norm_scaled_softmax():
  x, w = X, W
  wn = w / np.linalg.norm(w, axis=0)
  logits = x @ wn  # = ||x|| cos θ
  xent = -jax.nn.log_softmax(logits)[np.arange(10), MARGIN_LABELS].mean()
  np.testing.assert_allclose(M.sphereface(x, MARGIN_LABELS, w, margin=1),
                             xent, rtol=1e-5)


def test_sphereface_psi_hand():
  w = np.eye(2, dtype=np.float32)
  # θ = π/3 to class 0 with m = 4: k = 1, ψ = −cos(4π/3) − 2 = −1.5.
  x = np.array([[0.5, math.sqrt(0.75)]], np.float32) * 2  # ||x|| = 2
  expected = math.log1p(math.exp(2 * (math.cos(math.pi / 6) + 1.5)))
  np.testing.assert_allclose(M.sphereface(x, np.array([0]), w), expected,
                             rtol=1e-5)


def test_cosface_arcface_zero_margin_are_normalised_softmax():
  xn = X / np.linalg.norm(X, axis=-1, keepdims=True)
  wn = W / np.linalg.norm(W, axis=0)
  xent = -jax.nn.log_softmax(3.0 * xn @ wn)[np.arange(10),
                                             MARGIN_LABELS].mean()
  for loss in (M.cosface, M.arcface):
    np.testing.assert_allclose(
        loss(X, MARGIN_LABELS, W, scale=3.0, margin=0.0), xent, rtol=1e-5)


def test_arcface_fallback_branch_hand():
  w = np.eye(2, dtype=np.float32)
  x = np.array([[-1.0, 1.0]], np.float32)  # θ = 3π/4 to class 0
  m = 1.0  # θ + m > π: target logit cos θ − m·sin m
  target = math.cos(3 * math.pi / 4) - math.sin(1.0)
  expected = math.log1p(math.exp(math.cos(math.pi / 4) - target))
  np.testing.assert_allclose(
      M.arcface(x, np.array([0]), w, scale=1.0, margin=m), expected,
      rtol=1e-5)


def test_margin_losses_use_only_normalised_weights():
  scaled = W * np.array([1.0, 10.0, 0.1, 3.0], np.float32)
  for loss in (M.cosface, M.arcface, M.sphereface):
    np.testing.assert_allclose(loss(X, MARGIN_LABELS, scaled),
                               loss(X, MARGIN_LABELS, W), rtol=1e-5)


# ------------------------------------------------ exclusion of empty rows ---

BATCH_LOSSES = [
    lambda x, y: M.batch_triplet(x, y, mining="batch_hard"),
    lambda x, y: M.batch_triplet(x, y, mining="batch_all"),
    lambda x, y: M.batch_triplet(x, y, mining="semi_hard"),
    lambda x, y: M.batch_triplet(x, y, squared=False),
    M.lifted_structured,
    M.soft_nearest_neighbour,
]


@pytest.mark.parametrize("loss", BATCH_LOSSES)
@pytest.mark.parametrize("labels", [np.zeros(4, np.int32),
                                    np.arange(4, dtype=np.int32)],
                         ids=["one_class", "all_singletons"])
def test_batch_without_valid_rows_is_zero(loss, labels):
  x = randn(4, 3)
  value, grad = jax.value_and_grad(loss)(x, labels)
  assert value == 0.0
  assert np.all(np.isfinite(grad))


def test_singleton_anchor_is_excluded_not_counted():
  # Anchor 7 of LABELS is alone in its class: the mean runs over 9 anchors.
  x = X.copy()
  x[7] += 100.0  # would dominate if it were counted
  for mining, ref in REF_MINING.items():
    np.testing.assert_allclose(
        M.batch_triplet(x, LABELS, margin=1.0, mining=mining),
        ref(x, LABELS, 1.0), rtol=1e-5)


# -------------------------------------------------------- label handling ---

LABELLED = {
    "center_loss": lambda y: M.center_loss(X, y, W.T),
    "sphereface": lambda y: M.sphereface(X, y, W),
    "cosface": lambda y: M.cosface(X, y, W),
    "arcface": lambda y: M.arcface(X, y, W),
    "center_loss_update": lambda y: M.center_loss_update(W.T, X, y),
}


@pytest.mark.parametrize("bad", [4, -1])
@pytest.mark.parametrize("name", sorted(LABELLED))
def test_out_of_range_labels(name, bad):
  labels = MARGIN_LABELS.copy()
  labels[3] = bad
  with pytest.raises(ValueError, match="labels"):
    LABELLED[name](labels)
  # Under jit they cannot be checked: NaN, never a clipped or wrapped row.
  out = jax.jit(LABELLED[name])(labels)
  assert np.any(np.isnan(out))
  assert np.all(np.isfinite(jax.jit(LABELLED[name])(MARGIN_LABELS)))


# ----------------------------------------------------------- global view ---


@pytest.mark.parametrize("loss", [
    lambda x, y: M.batch_triplet(x, y, mining="batch_hard"),
    lambda x, y: M.batch_triplet(x, y, mining="batch_all"),
    lambda x, y: M.batch_triplet(x, y, mining="semi_hard"),
    M.lifted_structured,
    lambda x, y: M.arcface(x, y % 4, W, scale=4.0),
], ids=["batch_hard", "batch_all", "semi_hard", "lifted", "arcface"])
def test_global_view_sharded_jit_matches_unsharded(loss):
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  x = randn(16, 5)
  labels = RNG.integers(0, 5, size=16).astype(np.int32)
  sharding = NamedSharding(mesh, P("data"))
  xs, ys = jax.device_put(x, sharding), jax.device_put(labels, sharding)
  value, grad = jax.jit(jax.value_and_grad(loss))(xs, ys)
  ref_value, ref_grad = jax.value_and_grad(loss)(x, labels)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------ bad inputs ---

x2d, y1d = randn(4, 3), np.array([0, 1, 0, 1], np.int32)
BAD = [
    ("x1", lambda: M.contrastive_pair(x2d[0], x2d[0], y1d)),
    ("x2", lambda: M.contrastive_pair(x2d, x2d[:, :2], y1d)),
    ("same", lambda: M.contrastive_pair(x2d, x2d, y1d[:3])),
    ("same", lambda: M.contrastive_pair(x2d, x2d, y1d * 2)),
    ("margin", lambda: M.contrastive_pair(x2d, x2d, y1d, margin=-1.0)),
    ("negative", lambda: M.triplet(x2d, x2d, x2d[:3])),
    ("margin", lambda: M.triplet(x2d, x2d, x2d, margin=-0.1)),
    ("embeddings", lambda: M.batch_triplet(x2d[None], y1d)),
    ("labels", lambda: M.batch_triplet(x2d, y1d[:3])),
    ("labels", lambda: M.batch_triplet(x2d, y1d.astype(np.float32))),
    ("labels", lambda: M.batch_triplet(x2d, y1d[:, None])),
    ("mining", lambda: M.batch_triplet(x2d, y1d, mining="hardest")),
    ("margin", lambda: M.batch_triplet(x2d, y1d, margin=-1.0)),
    ("positives", lambda: M.n_pair(x2d, x2d[:3])),
    ("l2_reg", lambda: M.n_pair(x2d, x2d, l2_reg=-1.0)),
    ("labels", lambda: M.lifted_structured(x2d, y1d.astype(np.float32))),
    ("margin", lambda: M.lifted_structured(x2d, y1d, margin=-1.0)),
    ("temperature", lambda: M.soft_nearest_neighbour(x2d, y1d,
                                                     temperature=0.0)),
    ("embeddings", lambda: M.soft_nearest_neighbour(x2d[0], y1d)),
    ("centers", lambda: M.center_loss(x2d, y1d, np.zeros((2, 4)))),
    ("centers", lambda: M.center_loss(x2d, y1d, np.zeros(3))),
    ("features", lambda: M.center_loss(x2d[0], y1d, np.zeros((2, 3)))),
    ("labels", lambda: M.center_loss(x2d, y1d.astype(np.float32),
                                     np.zeros((2, 3)))),
    ("alpha", lambda: M.center_loss_update(np.zeros((2, 3)), x2d, y1d,
                                           alpha=1.5)),
    ("weights", lambda: M.sphereface(x2d, y1d, np.zeros((4, 2)))),
    ("weights", lambda: M.cosface(x2d, y1d, np.zeros(3))),
    ("labels", lambda: M.arcface(x2d, y1d[:3], np.ones((3, 2)))),
    ("margin", lambda: M.sphereface(x2d, y1d, np.ones((3, 2)), margin=0)),
    ("margin", lambda: M.sphereface(x2d, y1d, np.ones((3, 2)), margin=2.5)),
    ("margin", lambda: M.sphereface(x2d, y1d, np.ones((3, 2)), margin=True)),
    ("scale", lambda: M.sphereface(x2d, y1d, np.ones((3, 2)), scale=-1.0)),
    ("scale", lambda: M.cosface(x2d, y1d, np.ones((3, 2)), scale=0.0)),
    ("margin", lambda: M.cosface(x2d, y1d, np.ones((3, 2)), margin=-0.1)),
    ("scale", lambda: M.arcface(x2d, y1d, np.ones((3, 2)), scale=0.0)),
    ("margin", lambda: M.arcface(x2d, y1d, np.ones((3, 2)), margin=4.0)),
]


@pytest.mark.parametrize("arg,call", BAD, ids=[f"{i}-{b[0]}"
                                               for i, b in enumerate(BAD)])
def test_bad_inputs_raise(arg, call):
  with pytest.raises(ValueError, match=arg):
    call()
