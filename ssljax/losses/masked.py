"""Losses of masked image modelling: MAE, iBOT's patch loss, I-JEPA, KoLeo.

* `mae`: mean squared error on the (normalised) pixels of masked patches
  (He et al. 2022);
* `ibot_patch`: self-distillation of the teacher's patch tokens of the
  unmasked view into the student's tokens at the masked positions (Zhou et
  al. 2022);
* `ijepa`: distance between predicted and layer-normalised target-encoder
  representations of the target blocks (Assran et al. 2023);
* `koleo`: the Kozachenko-Leonenko entropy regulariser of DINOv2
  (Sablayrolles et al. 2019; Oquab et al. 2023).

`mae` and `ijepa` average over the masked entries of the whole batch and
`koleo` finds each example's nearest neighbour among the others: inside
`shard_map`, `axis_name` sums those counts / gathers those neighbours over
devices, so that the mean over devices of the per-device loss (and its
gradient) equals the single-device loss on the global batch. `ibot_patch` is
a mean of per-image terms and needs no collective. Half-precision inputs are
computed in float32; every loss returns a scalar.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax._common import (all_gather, check_positive, check_rank,
                            check_same_shape, global_row_offset, l2_normalize,
                            psum, safe_norm, to_compute)

DISTANCES = ("smooth_l1", "l2")


def _check_weights(weights, shape: tuple, name: str, fn: str) -> None:
  """`weights` must have the leading shape `shape` (bool or float)."""
  if weights is not None and np.shape(weights) != tuple(shape):
    raise ValueError(f"{fn}: `{name}` must have shape {tuple(shape)}, got "
                     f"{np.shape(weights)}.")


def _weighted_mean(values: jax.Array, weights: Optional[jax.Array],
                   axis_name: Optional[str], per_entry: int = 1) -> jax.Array:
  """Σ w·v / (per_entry · Σ w) over every entry (and device); the plain mean
  (over entries, then `per_entry`) when `weights` is None; 0 when every
  weight is 0. The weights carry no gradient."""
  weights = (jnp.ones_like(values) if weights is None else
             jax.lax.stop_gradient(weights.astype(values.dtype)))
  total = psum(jnp.sum(values * weights), axis_name)
  count = psum(jnp.sum(weights), axis_name) * per_entry
  return total / jnp.maximum(count, 1e-12)


def mae(prediction: jax.Array, target: jax.Array,
        mask: Optional[jax.Array] = None, *, norm_pix: bool = True,
        eps: float = 1e-6, axis_name: Optional[str] = None) -> jax.Array:
  """MAE's reconstruction loss on the masked patches.

      t̂ = (t − mean(t)) / √(var(t) + ε)   per patch (`norm_pix`, the
                                            unbiased variance, as torch's)
      loss = Σ_bn m_bn · mean_p (x_bnp − t̂_bnp)² / Σ_bn m_bn

  He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
  Sec. 3 ("we compute the loss only on masked patches"; normalised pixels
  as targets improve the representation, Table 1c) and the official
  `forward_loss`. No gradient flows into the target or the mask.

  Args:
    prediction: [B, N, P] predicted patches (P = p·p·C pixels).
    target: [B, N, P] the image's patches (`models.patchify`).
    mask: [B, N] weights, 1 (True) on the masked patches; None weighs every
      patch (predictions already gathered at the masked positions).
    norm_pix: normalise each target patch by its mean and std.
    eps: ε of the normalisation.
    axis_name: mapped axis whose devices hold the other examples, or None.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> target = jnp.array([[[0.0, 2.0], [1.0, 1.0]]])  # B=1, N=2, P=2
    >>> pred = jnp.zeros((1, 2, 2))
    >>> print(float(mae(pred, target, jnp.array([[1, 0]]), norm_pix=False)))
    2.0
  """
  fn = "mae"
  check_rank(prediction, 3, "prediction", fn)
  check_same_shape(fn, prediction=prediction, target=target)
  _check_weights(mask, prediction.shape[:2], "mask", fn)
  check_positive(eps, "eps", fn)
  if norm_pix and prediction.shape[-1] < 2:
    raise ValueError(f"{fn}: `norm_pix` needs patches of at least 2 values, "
                     f"got shape {prediction.shape}.")
  x, t = to_compute(prediction, jax.lax.stop_gradient(target))
  if norm_pix:
    t = (t - jnp.mean(t, axis=-1, keepdims=True)) / jnp.sqrt(
        jnp.var(t, axis=-1, ddof=1, keepdims=True) + eps)
  per_patch = jnp.mean(jnp.square(x - t), axis=-1)
  return _weighted_mean(per_patch, mask, axis_name)


def ibot_patch(student_logits: jax.Array, teacher_logits: jax.Array,
               center: jax.Array, mask: jax.Array, *,
               student_temp: float = 0.1, teacher_temp: float = 0.07
               ) -> jax.Array:
  """iBOT's masked-patch self-distillation (the MIM term of its loss).

      P_t = stop_gradient(softmax((t − c) / τ_t))     teacher, unmasked view
      log P_s = log_softmax(s / τ_s)                   student, masked view
      ℓ_vb = Σ_n m_vbn Σ_k −P_t[v,b,n,k] log P_s[v,b,n,k] / max(Σ_n m_vbn, 1)
      loss = mean over views v and images b of ℓ_vb

  Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR
  2022, eq. 2, and the official `iBOTLoss`: the same view's tokens pair up
  (student masked, teacher not), an image without masked patches adds 0 to
  the mean. For DINOv2's Sinkhorn-Knopp centring, pass the codes Q as
  `teacher_logits = log Q` with a zero `center` and `teacher_temp=1`
  (softmax(log Q) = Q).

  Args:
    student_logits: [..., N, K] head outputs of the student's patch tokens.
    teacher_logits: [..., N, K] the teacher's, same shape.
    center: [K] the teacher's patch centre.
    mask: [..., N] bool or weights, True on the masked patches.
    student_temp: τ_s > 0.
    teacher_temp: τ_t > 0, may be traced (warm-up).

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.zeros((2, 3, 4))  # uniform student: log 4 per token
    >>> t = jnp.ones((2, 3, 4))
    >>> m = jnp.array([[True, False, True], [False, False, False]])
    >>> print(round(float(ibot_patch(s, t, jnp.zeros(4), m)), 4))  # (ln 4 + 0)/2
    0.6931
  """
  fn = "ibot_patch"
  check_rank(student_logits, (3, 4), "student_logits", fn)
  check_same_shape(fn, student_logits=student_logits,
                   teacher_logits=teacher_logits)
  check_rank(center, 1, "center", fn)
  if center.shape[0] != student_logits.shape[-1]:
    raise ValueError(f"{fn}: `center` must have K = "
                     f"{student_logits.shape[-1]} entries, got shape "
                     f"{center.shape}.")
  _check_weights(mask, student_logits.shape[:-1], "mask", fn)
  check_positive(student_temp, "student_temp", fn)
  check_positive(teacher_temp, "teacher_temp", fn)
  s, t, c = to_compute(student_logits, teacher_logits, center)
  teacher_probs = jax.lax.stop_gradient(
      jax.nn.softmax((t - c) / teacher_temp, axis=-1))
  cross_entropy = -jnp.sum(
      teacher_probs * jax.nn.log_softmax(s / student_temp, axis=-1), axis=-1)
  weights = jax.lax.stop_gradient(mask.astype(cross_entropy.dtype))
  per_image = jnp.sum(cross_entropy * weights, axis=-1) / jnp.maximum(
      jnp.sum(weights, axis=-1), 1.0)
  return jnp.mean(per_image)


def ijepa(prediction: jax.Array, target: jax.Array,
          valid: Optional[jax.Array] = None, *, distance: str = "smooth_l1",
          axis_name: Optional[str] = None) -> jax.Array:
  """I-JEPA's loss between predicted and target representations.

      ŝ = LN(s)            the target encoder's tokens, layer-normalised
                           over features (no affine, ε = 1e-5), no gradient
      loss = mean over valid tokens and features of d(p − ŝ),
      d(x) = x²/2 if |x| < 1 else |x| − 1/2   ("smooth_l1", the official
                                               code's `F.smooth_l1_loss`)
      d(x) = x²                                ("l2", the paper's eq. 1 up
                                               to a 1/D scale)

  Assran et al., "Self-Supervised Learning from Images with a
  Joint-Embedding Predictive Architecture", CVPR 2023.

  Args:
    prediction: [..., M, D] predictor outputs at the target positions.
    target: [..., M, D] the target encoder's tokens there (before LN).
    valid: [..., M] bool, False on padding tokens; None: all valid.
    distance: "smooth_l1" or "l2".
    axis_name: mapped axis whose devices hold the other examples, or None.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> target = jnp.array([[[1.0, -1.0]]])  # already normalised
    >>> pred = jnp.array([[[3.0, -1.0]]])
    >>> print(round(float(ijepa(pred, target)), 4))  # (1.5 + 0) / 2
    0.75
  """
  fn = "ijepa"
  check_rank(prediction, (2, 3, 4), "prediction", fn)
  check_same_shape(fn, prediction=prediction, target=target)
  _check_weights(valid, prediction.shape[:-1], "valid", fn)
  if distance not in DISTANCES:
    raise ValueError(f"{fn}: `distance` must be one of {DISTANCES}, got "
                     f"{distance!r}.")
  p, t = to_compute(prediction, jax.lax.stop_gradient(target))
  mean = jnp.mean(t, axis=-1, keepdims=True)
  t = (t - mean) * jax.lax.rsqrt(
      jnp.mean(jnp.square(t - mean), axis=-1, keepdims=True) + 1e-5)
  d = p - t
  if distance == "l2":
    elementwise = jnp.square(d)
  else:
    elementwise = jnp.where(jnp.abs(d) < 1, 0.5 * jnp.square(d),
                            jnp.abs(d) - 0.5)
  return _weighted_mean(jnp.sum(elementwise, axis=-1), valid, axis_name,
                        prediction.shape[-1])


def koleo(x: jax.Array, *, eps: float = 1e-8,
          axis_name: Optional[str] = None) -> jax.Array:
  """The Kozachenko-Leonenko (KoLeo) entropy regulariser of DINOv2.

      u_i = x_i / ||x_i||,   ρ_i = min_{j ≠ i} ||u_i − u_j||
      loss = −(1/B) Σ_i log(ρ_i + ε)

  Sablayrolles et al., "Spreading vectors for similarity search", ICLR
  2019 (the differential-entropy estimator, up to constants); used on the
  student's CLS tokens by Oquab et al., "DINOv2", 2023 (official
  `KoLeoLoss`, weight 0.1). Minimising it pushes each example away from its
  nearest neighbour in the batch; the neighbour is chosen without gradient
  (largest inner product), and the gradient flows through both ends.
  Identical rows give ρ = 0 and a finite loss (−log ε).

  Args:
    x: [B, D] features, B >= 2 over all devices.
    eps: ε of the normalisation and the logarithm.
    axis_name: mapped axis whose devices hold the other examples (their
      rows are candidate neighbours), or None.

  Returns:
    Scalar loss.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> # ρ = √2 for every row: −log √2.
    >>> print(round(float(koleo(x)), 4))
    -0.3466
  """
  fn = "koleo"
  check_rank(x, 2, "x", fn)
  check_positive(eps, "eps", fn)
  local = x.shape[0]
  u = l2_normalize(to_compute(x), eps=eps ** 2)
  everyone = all_gather(u, axis_name)
  if everyone.shape[0] < 2:
    raise ValueError(f"{fn}: `x` needs at least 2 rows over all devices, got "
                     f"shape {x.shape}.")
  rows = global_row_offset(local, axis_name) + jnp.arange(local)
  dots = jax.lax.stop_gradient(u @ everyone.T)
  dots = jnp.where(jnp.arange(everyone.shape[0]) == rows[:, None], -jnp.inf,
                   dots)
  neighbour = everyone[jnp.argmax(dots, axis=1)]
  return -jnp.mean(jnp.log(safe_norm(u - neighbour, eps=eps ** 2) + eps))
