"""Non-contrastive losses: BYOL, SimSiam, Barlow Twins, VICReg, DINO.

None of these losses uses negatives. BYOL and SimSiam regress one branch onto
a gradient-stopped other branch; Barlow Twins and VICReg regularise batch
statistics instead, so their value depends on the whole batch and they take
`axis_name`: inside `shard_map`/pmap the batch means, variances and
cross-correlations are all-reduced, every device computes the loss of the
global batch, and the mean over devices of the per-device loss (and of its
gradient) equals the single-device result. Under plain `jax.jit` on sharded
arrays no `axis_name` is needed: the code already sees the global batch.

All losses compute in float32 for half-precision inputs (float64 stays
float64) and return a scalar.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from ssljax._common import (axis_size, check_dim, check_non_negative,
                            check_positive, check_rank, check_same_shape,
                            l2_normalize, psum, to_compute)


# ------------------------------------------------------ regression losses ---


def _cosine_to_target(prediction, target, fn: str) -> jax.Array:
  """Row-wise cos(prediction, stop_gradient(target)), [B]."""
  check_rank(prediction, 2, "prediction", fn)
  check_rank(target, 2, "target", fn)
  check_same_shape(fn, prediction=prediction, target=target)
  p, t = to_compute(prediction, target)
  t = jax.lax.stop_gradient(t)
  return jnp.sum(l2_normalize(p) * l2_normalize(t), axis=-1)


def byol(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """BYOL regression loss, mean over the batch.

      loss = mean_b ||p̄_b − t̄_b||² = mean_b (2 − 2·cos(p_b, t_b)),

  with x̄ = x/||x|| and no gradient through `target` (the EMA target
  network's projection). Grill et al., "Bootstrap Your Own Latent", NeurIPS
  2020, eq. 2. The paper symmetrises by also feeding the views the other way
  round; the BYOL method adds the two calls. A zero vector has cosine 0 with
  everything (loss 2) and a finite gradient.

  Args:
    prediction: [B, D] online predictions.
    target: [B, D] target projections of the other view.

  Returns:
    Scalar loss in [0, 4].

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.non_contrastive import byol
    >>> p = jnp.array([[1., 0.], [0., 1.]])
    >>> t = jnp.array([[2., 0.], [1., 0.]])
    >>> print(round(float(byol(p, t)), 4))  # (0 + 2) / 2
    1.0
  """
  return jnp.mean(2.0 - 2.0 * _cosine_to_target(prediction, target, "byol"))


def simsiam(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """SimSiam negative cosine similarity, mean over the batch.

      loss = −mean_b cos(p_b, stop_gradient(z_b)).

  Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
  eq. 1; the stop-gradient on `target` is what prevents collapse. The method
  symmetrises (D(p1, z2)/2 + D(p2, z1)/2).

  Args:
    prediction: [B, D] predictor outputs p.
    target: [B, D] projections z of the other view.

  Returns:
    Scalar loss in [−1, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.non_contrastive import simsiam
    >>> p = jnp.array([[1., 1.], [1., 0.]])
    >>> z = jnp.array([[3., 3.], [0., -2.]])
    >>> print(round(float(simsiam(p, z)), 4))  # −(1 + 0) / 2
    -0.5
  """
  return -jnp.mean(_cosine_to_target(prediction, target, "simsiam"))


# ------------------------------------------------- batch-statistics losses ---


def _check_pair(z1, z2, fn: str) -> None:
  check_rank(z1, 2, "z1", fn)
  check_rank(z2, 2, "z2", fn)
  check_same_shape(fn, z1=z1, z2=z2)


def _centre(z: jax.Array, axis_name: Optional[str]):
  """z minus its batch mean over all devices on `axis_name`; global batch size."""
  n = z.shape[0] * axis_size(axis_name)
  mean = psum(jnp.sum(z, axis=0), axis_name) / n
  return z - mean, n


def _batch_gram(a: jax.Array, b: jax.Array,
                axis_name: Optional[str]) -> jax.Array:
  """Σ_n a_nᵀ b_n over the global batch, [D, D]."""
  return psum(a.T @ b, axis_name)


def _off_diagonal_sq_sum(c: jax.Array) -> jax.Array:
  """Σ_{i≠j} c_ij²; masking (rather than subtracting the diagonal) is exact."""
  diagonal = jnp.eye(c.shape[0], dtype=bool)
  return jnp.sum(jnp.where(diagonal, 0.0, jnp.square(c)))


def barlow_twins(z1: jax.Array, z2: jax.Array, *, lambda_: float = 5e-3,
                 eps: float = 1e-5,
                 axis_name: Optional[str] = None) -> jax.Array:
  """Barlow Twins redundancy-reduction loss.

  Each feature is standardised over the batch, ẑ = (z − mean) / sqrt(var + eps)
  with the *biased* variance (divide by N), as the official code's
  `BatchNorm1d(affine=False)` does in training mode (its default eps is 1e-5);
  then

      C = ẑ1ᵀ ẑ2 / N                                   [D, D]
      loss = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij².

  Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
  Reduction", ICML 2021, eq. 1 (no extra loss scale, as in the current
  official code). A feature that is constant over the batch standardises to
  zero (eps keeps it finite), so its diagonal term is 1.

  With `axis_name` (inside `shard_map`/pmap) the means, variances and C are
  summed over devices, as the official code's SyncBatchNorm and all-reduce of
  C do: every device returns the loss of the global batch.

  Args:
    z1: [N, D] projections of the first view.
    z2: [N, D] projections of the second view.
    lambda_: weight λ >= 0 of the off-diagonal (redundancy) term.
    eps: > 0, added to the variance before the square root.
    axis_name: mapped axis to reduce batch statistics over, or None.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.non_contrastive import barlow_twins
    >>> z = jnp.array([[1., 1.], [1., -1.], [-1., 1.], [-1., -1.]])
    >>> print(round(float(barlow_twins(z, z)), 4))  # C = I: already optimal
    0.0
    >>> print(round(float(barlow_twins(z, -z)), 3))  # C = −I: 2 · (1 + 1)²
    8.0
  """
  fn = "barlow_twins"
  _check_pair(z1, z2, fn)
  check_non_negative(lambda_, "lambda_", fn)
  check_positive(eps, "eps", fn)
  z1, z2 = to_compute(z1, z2)

  def standardise(z):
    zc, n = _centre(z, axis_name)
    var = psum(jnp.sum(jnp.square(zc), axis=0), axis_name) / n
    return zc * jax.lax.rsqrt(var + eps), n

  z1n, n = standardise(z1)
  z2n, _ = standardise(z2)
  c = _batch_gram(z1n, z2n, axis_name) / n
  on_diagonal = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
  return on_diagonal + lambda_ * _off_diagonal_sq_sum(c)


def vicreg(z1: jax.Array, z2: jax.Array, *, sim_weight: float = 25.0,
           var_weight: float = 25.0, cov_weight: float = 1.0,
           eps: float = 1e-4, axis_name: Optional[str] = None) -> jax.Array:
  """VICReg: variance-invariance-covariance regularisation.

      invariance = mean_{n,d} (z1_nd − z2_nd)²
      Cov(z)     = (z − z̄)ᵀ (z − z̄) / (N − 1)                 (unbiased)
      v(z)       = mean_d relu(1 − sqrt(Cov(z)_dd + eps))
      c(z)       = Σ_{i≠j} Cov(z)_ij² / D
      loss = sim_weight · invariance + var_weight · (v(z1) + v(z2)) / 2
             + cov_weight · (c(z1) + c(z2)).

  Bardes, Ponce & LeCun, "VICReg", ICLR 2022, eqs. 1-6, with the official
  code's (facebookresearch/vicreg, main_vicreg.py) conventions: the variance
  term is averaged over the two branches while the covariance term is summed,
  the variance is unbiased (N − 1) and eps = 1e-4 sits inside the square root.
  Features that are constant over the batch give a finite loss and gradient
  (the eps), each contributing relu(1 − sqrt(eps)) = 0.99 to v.

  With `axis_name` (inside `shard_map`/pmap) the mean and covariance are
  global, as the official code's all-gather makes them; the invariance term is
  the local mean, whose average over equal-sized shards is the global mean,
  again as in the official code. So the mean over devices of the per-device
  loss is the loss of the global batch.

  Args:
    z1: [N, D] embeddings of the first view (N >= 2 over all devices).
    z2: [N, D] embeddings of the second view.
    sim_weight: λ >= 0, weight of the invariance term.
    var_weight: μ >= 0, weight of the variance term.
    cov_weight: ν >= 0, weight of the covariance term.
    eps: > 0, added to the variance inside the square root.
    axis_name: mapped axis to reduce batch statistics over, or None.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.non_contrastive import vicreg
    >>> z = jnp.zeros((4, 2))  # collapsed: only the variance term is active
    >>> print(round(float(vicreg(z, z)), 4))  # 25 · (1 − sqrt(1e-4))
    24.75
  """
  fn = "vicreg"
  _check_pair(z1, z2, fn)
  for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight),
                      ("cov_weight", cov_weight)):
    check_non_negative(value, name, fn)
  check_positive(eps, "eps", fn)
  n_global = z1.shape[0] * axis_size(axis_name)
  if n_global < 2:
    raise ValueError(
        f"{fn}: `z1` and `z2` need a batch of at least 2 (over all devices) "
        f"for the unbiased variance, got {n_global}.")
  z1, z2 = to_compute(z1, z2)
  dim = z1.shape[1]

  def regularisers(z):
    zc, n = _centre(z, axis_name)
    cov = _batch_gram(zc, zc, axis_name) / (n - 1)
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    return jnp.mean(jax.nn.relu(1.0 - std)), _off_diagonal_sq_sum(cov) / dim

  invariance = jnp.mean(jnp.square(z1 - z2))
  var1, cov1 = regularisers(z1)
  var2, cov2 = regularisers(z2)
  return (sim_weight * invariance + var_weight * (var1 + var2) / 2
          + cov_weight * (cov1 + cov2))


# -------------------------------------------------------- self-distillation ---


def dino(student_logits: jax.Array, teacher_logits: jax.Array,
         center: jax.Array, *, student_temp: float = 0.1,
         teacher_temp: float = 0.04) -> jax.Array:
  """DINO self-distillation cross-entropy over pairs of different views.

      P_t = stop_gradient(softmax((t − center) / teacher_temp))    [Vt, B, K]
      log P_s = log_softmax(s / student_temp)                       [Vs, B, K]
      loss = 1/|pairs| Σ_{(i, j): j ≠ i} mean_b Σ_k −P_t[i,b,k] log P_s[j,b,k]

  over teacher views i < Vt and student views j < Vs; the teacher views are
  the first Vt student views (the global crops), so the Vt same-view pairs are
  skipped and |pairs| = Vt · (Vs − 1), the official code's `n_loss_terms`.
  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
  ICCV 2021, eq. 3 and Algorithm 1. `center` is the running mean of the
  teacher logits (`ssljax.state.center`). `teacher_temp` may be a traced
  scalar (the paper warms it up from 0.04 to 0.07).

  The per-example terms need no cross-device reduction: under `shard_map` the
  mean over equal-sized shards is the global loss.

  Args:
    student_logits: [Vs, B, K] student head outputs, global crops first.
    teacher_logits: [Vt, B, K] teacher head outputs of the global crops,
      Vt <= Vs.
    center: [K] teacher center.
    student_temp: > 0 student softmax temperature.
    teacher_temp: > 0 teacher softmax (sharpening) temperature.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.non_contrastive import dino
    >>> s = jnp.zeros((4, 2, 8))  # uniform student: every term is log K
    >>> t = jnp.ones((2, 2, 8))
    >>> print(round(float(dino(s, t, jnp.zeros(8))), 4))  # log 8
    2.0794
  """
  fn = "dino"
  check_rank(student_logits, 3, "student_logits", fn)
  check_rank(teacher_logits, 3, "teacher_logits", fn)
  check_rank(center, 1, "center", fn)
  check_dim(fn, 1, student_logits=student_logits, teacher_logits=teacher_logits)
  check_dim(fn, -1, student_logits=student_logits,
            teacher_logits=teacher_logits, center=center)
  check_positive(student_temp, "student_temp", fn)
  check_positive(teacher_temp, "teacher_temp", fn)
  n_student, batch = student_logits.shape[:2]
  n_teacher = teacher_logits.shape[0]
  if n_teacher > n_student:
    raise ValueError(
        f"{fn}: `teacher_logits` must have at most as many views as "
        f"`student_logits` (its views are the first student views), got "
        f"Vt={n_teacher} > Vs={n_student}.")
  n_pairs = n_teacher * (n_student - 1)
  if n_pairs == 0:
    raise ValueError(
        f"{fn}: `student_logits` and `teacher_logits` give no pair of "
        f"different views; need Vt >= 1 and Vs >= 2, got Vt={n_teacher}, "
        f"Vs={n_student}.")
  s, t, c = to_compute(student_logits, teacher_logits, center)
  teacher_probs = jax.lax.stop_gradient(
      jax.nn.softmax((t - c) / teacher_temp, axis=-1))
  student_log_probs = jax.nn.log_softmax(s / student_temp, axis=-1)
  # cross_entropy[i, j] = mean_b Σ_k −P_t[i, b, k] log P_s[j, b, k].
  cross_entropy = -jnp.einsum(
      "ibk,jbk->ij", teacher_probs, student_log_probs) / batch
  same_view = jnp.eye(n_teacher, n_student, dtype=bool)
  return jnp.sum(jnp.where(same_view, 0.0, cross_entropy)) / n_pairs
