"""What DeepCluster, DeeperCluster and SeLa share, written once.

The three methods alternate two stages (Caron et al. 2018, 2019; Asano et
al. 2020):

  1. every `config.method.reassign_epochs` epochs (`every`), label every
     training example from the network's features of the whole split:
     k-means for DeepCluster and DeeperCluster, Sinkhorn-Knopp for SeLa
     (`Method.dataset_update`);
  2. in between, train the network to classify augmented views of each
     example as its label, which the loss finds in the method state by the
     batch's "index" (`batch_labels`).

Pieces:

* `PseudoLabels`, the method state: labels [H, N] (H heads or one) and, for
  the k-means methods, per-example loss weights [N] that balance the
  pseudo-classes (`balance_weights`);
* linear classification heads as plain arrays (`init_heads`,
  `apply_heads`), re-drawn after each clustering by DeepCluster and
  DeeperCluster, and the (weighted) cross-entropy;
* DeepCluster's feature pre-processing: PCA-whitening and l2 normalisation
  (`pca_whiten`, `preprocess_features`);
* what the update logs: NMI between two labellings
  (`normalized_mutual_information`, DeepCluster's stability curve) and
  cluster-size statistics (`cluster_statistics`);
* the k-means methods' network (backbone and MLP head), its eval-mode
  features (`projection_features`) and the relabelling step they share
  (`relabel`).

Config fields read here: `config.method.{reassign_epochs, num_clusters,
proj_dim}` (plus those of `_shared.projector_network`),
`config.dataset.train_size`, `config.batch_size`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import xlogy

from ssljax import _common, models
from ssljax.data import augment
from ssljax.methods import _pretext, _shared

PyTree = Any

# DeepCluster's initialisation of its classification layer: weights
# ~ N(0, 0.01²), zero biases.
HEAD_INIT_STD = 0.01

# Eigenvalues below this fraction of the largest are raised to it before
# whitening (DeeperCluster's PCA): directions without variance (dead units,
# fewer examples than dimensions) would otherwise be divided by zero.
PCA_EIGEN_FLOOR = 1e-5

# Parts of the k-means methods' network that the optimizer and `encode` see
# as a `models.compose` model; the classifiers are kept beside them.
NETWORK_PARTS = ("backbone", "projector")


class PseudoLabels(NamedTuple):
  """Per-example pseudo-labels of the training split, row i = example i.

  Attributes:
    labels: int32 [H, N], the label of example n for head h (H = 1 for
      DeepCluster and DeeperCluster).
    weights: float32 [N] loss weight of each example (`balance_weights`),
      or None when the labels are balanced by construction (SeLa).
  """
  labels: jax.Array
  weights: Optional[jax.Array] = None


# ---------------------------------------------------------------- config ---


def _check_positive_number(value, name: str, fn: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"{fn}: `{name}` must be a number > 0, got {value!r}.")
  _common.check_positive(value, name, fn)


def check_config(config, fn: str, *, counts: Mapping[str, int],
                 positive: Sequence[str] = ("reassign_epochs",)) -> None:
  """Raises ValueError naming the key of a bad `config.method` field.

  `counts` maps int fields to their minimum; `positive` lists fields that
  must be numbers > 0. `num_clusters` (always checked) must also be at most
  `config.dataset.train_size`.
  """
  method = config.method
  train_size = config.dataset.train_size
  _common.check_count(train_size, "config.dataset.train_size", fn, minimum=1)
  for name, minimum in {"num_clusters": 1, **counts}.items():
    _common.check_count(method.get(name), f"config.method.{name}", fn,
                        minimum=minimum)
  for name in positive:
    _check_positive_number(method.get(name), f"config.method.{name}", fn)
  if method.num_clusters > train_size:
    raise ValueError(
        f"{fn}: `config.method.num_clusters` must be <= "
        f"config.dataset.train_size ({train_size}), got "
        f"{method.num_clusters}.")


def every(config) -> int:
  """Steps between two labellings: `reassign_epochs` epochs of
  `train_size // batch_size` steps, at least one.

  Example:
    >>> import ml_collections
    >>> config = ml_collections.ConfigDict(dict(
    ...     batch_size=256, dataset=dict(train_size=4000),
    ...     method=dict(reassign_epochs=2.0)))
    >>> every(config)
    30
  """
  epochs = config.method.reassign_epochs
  _check_positive_number(epochs, "config.method.reassign_epochs", "every")
  steps_per_epoch = config.dataset.train_size // config.batch_size
  return max(1, round(epochs * steps_per_epoch))


# ----------------------------------------------------------------- state ---


def init_state(config, num_heads: int, *, weighted: bool) -> PseudoLabels:
  """All labels 0 (the loop relabels before step 0) and unit weights."""
  size = config.dataset.train_size
  return PseudoLabels(
      labels=jnp.zeros((num_heads, size), jnp.int32),
      weights=jnp.ones((size,), jnp.float32) if weighted else None)


def lookup(state: PseudoLabels, index: jax.Array
           ) -> tuple[jax.Array, Optional[jax.Array]]:
  """The batch's labels [H, B] and weights [B] (or None), by dataset row.

  Args:
    state: the method's `PseudoLabels`.
    index: int [B], the examples' rows of the training split.

  Example:
    >>> import jax.numpy as jnp
    >>> state = PseudoLabels(jnp.array([[5, 6, 7]]), jnp.array([1., 2., 3.]))
    >>> labels, weights = lookup(state, jnp.array([2, 0]))
    >>> print(labels.tolist(), weights.tolist())
    [[7, 5]] [3.0, 1.0]
  """
  fn = "lookup"
  _common.check_rank(index, 1, "index", fn)
  _common.check_labels(index, state.labels.shape[1], "index", fn)
  labels = jnp.take(state.labels, index, axis=1)
  weights = None if state.weights is None else jnp.take(state.weights, index)
  return labels, weights


def batch_labels(state: PseudoLabels, batch, fn: str
                 ) -> tuple[jax.Array, Optional[jax.Array]]:
  """`lookup` of `batch["index"]`; a batch without it raises ValueError."""
  if not isinstance(batch, Mapping) or "index" not in batch:
    keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
    raise ValueError(
        f"{fn}: `batch` must be a dict with \"index\" (int32 [B], the "
        f"examples' rows of the train split, which `ssljax.train.train` adds "
        f"for methods with a `dataset_update`), got {keys}.")
  return lookup(state, batch["index"])


# ----------------------------------------------------------------- heads ---


def init_heads(key: jax.Array, *, num_heads: int, in_dim: int,
               num_classes: int, std: Optional[float] = HEAD_INIT_STD) -> dict:
  """H linear classifiers {"kernel": [H, D, K], "bias": [H, K]}.

  With `std` (default 0.01) weights ~ N(0, std²) and zero biases, the
  official DeepCluster's initialisation of its top layer; with std=None
  weights and biases ~ U(−1/√D, 1/√D), PyTorch's `nn.Linear` default that
  the official DeeperCluster and SeLa (ResNet) heads keep.

  The biases have rank 2, so `ssljax.train.decay_mask` gives them weight
  decay, as the official SGD (every parameter decayed) does.

  Example:
    >>> import jax
    >>> heads = init_heads(jax.random.key(0), num_heads=2, in_dim=3,
    ...                    num_classes=5)
    >>> print(heads["kernel"].shape, heads["bias"].shape)
    (2, 3, 5) (2, 5)
  """
  fn = "init_heads"
  for name, value in (("num_heads", num_heads), ("in_dim", in_dim),
                      ("num_classes", num_classes)):
    _common.check_count(value, name, fn, minimum=1)
  _common.check_positive(std, "std", fn)
  kernel_shape = (num_heads, in_dim, num_classes)
  if std is None:
    kernel_key, bias_key = jax.random.split(key)
    bound = in_dim ** -0.5
    return {"kernel": jax.random.uniform(kernel_key, kernel_shape,
                                         jnp.float32, -bound, bound),
            "bias": jax.random.uniform(bias_key, (num_heads, num_classes),
                                       jnp.float32, -bound, bound)}
  return {"kernel": std * jax.random.normal(key, kernel_shape, jnp.float32),
          "bias": jnp.zeros((num_heads, num_classes), jnp.float32)}


def reinit_heads(heads: dict, key: jax.Array, *,
                 std: Optional[float] = HEAD_INIT_STD) -> dict:
  """Fresh `init_heads` of the same shapes: a new classifier for a new
  clustering (DeepCluster re-creates its top layer every epoch)."""
  num_heads, in_dim, num_classes = heads["kernel"].shape
  return init_heads(key, num_heads=num_heads, in_dim=in_dim,
                    num_classes=num_classes, std=std)


def apply_heads(heads: dict, x: jax.Array) -> jax.Array:
  """Logits [H, ..., K] = x · W_h + b_h of every head for x [..., D] (e.g.
  [B, D], or [V, B, D] views), in float32 or wider.

  Example:
    >>> import jax.numpy as jnp
    >>> heads = {"kernel": jnp.ones((2, 3, 1)), "bias": jnp.array([[0.], [1.]])}
    >>> print(apply_heads(heads, jnp.array([[1., 2., 3.]])).ravel().tolist())
    [6.0, 7.0]
  """
  fn = "apply_heads"
  _common.check_rank(heads["kernel"], 3, "heads['kernel']", fn)
  if x.ndim < 1 or x.shape[-1] != heads["kernel"].shape[1]:
    raise ValueError(
        f"{fn}: `x` [..., D] must have D = {heads['kernel'].shape[1]} (the "
        f"heads' input size), got shape {x.shape}.")
  x = _common.to_compute(x)
  bias = heads["bias"].reshape(heads["bias"].shape[0],
                               *(1,) * (x.ndim - 1), -1)
  return (jnp.einsum("...d,hdk->h...k", x, heads["kernel"].astype(x.dtype))
          + bias.astype(x.dtype))


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: Optional[jax.Array] = None) -> jax.Array:
  """mean_n w_n · (−log softmax(logits_n)[labels_n]), w = 1 if None.

  `labels` (and `weights`) broadcast to logits.shape[:-1]. With the
  `balance_weights` (mean 1 over the dataset) this is, in expectation, the
  cross-entropy under DeepCluster's sampler that is uniform over the
  pseudo-classes.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((2, 4))
    >>> print(round(float(cross_entropy(logits, jnp.array([0, 1]))), 4))
    1.3863
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(
      _common.to_compute(logits), jnp.broadcast_to(labels, logits.shape[:-1]))
  return jnp.mean(ce if weights is None else ce * weights)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose arg-max is the label (a logged metric)."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


# ----------------------------------------------------- feature processing ---


def pca_whiten(x: jax.Array, dim: int) -> jax.Array:
  r"""PCA to `dim` dimensions with whitening (faiss's eigen_power = −½).

  With X̄ the centred rows and C = X̄ᵀX̄ / N = V Λ Vᵀ (eigenvalues in
  decreasing order),

      y_n = Λ_d^{−1/2} V_dᵀ x̄_n,

  so the output's covariance is the identity. Eigenvalues below 1e-5 × the
  largest are raised to that floor (DeeperCluster's `PCA.train_pca`), so
  that directions without variance stay finite. The sign of each component
  is the eigen-solver's. No gradient flows through it.

  Args:
    x: [N, D] features (bf16/f16 computed in float32).
    dim: output dimension, 1 <= dim <= D.

  Returns:
    [N, dim] whitened principal components.

  References:
    Caron et al., "Deep Clustering for Unsupervised Learning of Visual
    Features", ECCV 2018 (implementation details), and `preprocess_features`
    of the official code (facebookresearch/deepcluster).

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0., 0.], [2., 0.], [0., 4.], [2., 4.]])
    >>> y = pca_whiten(x, 2)
    >>> print(jnp.round(y.T @ y / 4, 4).tolist())  # identity covariance
    [[1.0, 0.0], [0.0, 1.0]]
  """
  fn = "pca_whiten"
  _common.check_rank(x, 2, "x", fn)
  _common.check_count(dim, "dim", fn, minimum=1)
  if dim > x.shape[1]:
    raise ValueError(f"{fn}: `dim` must be <= the feature dimension of `x` "
                     f"({x.shape[1]}), got {dim}.")
  x = _common.to_compute(jax.lax.stop_gradient(x))
  centred = x - jnp.mean(x, axis=0)
  highest = jax.lax.Precision.HIGHEST
  cov = jnp.matmul(centred.T, centred, precision=highest) / x.shape[0]
  values, vectors = jnp.linalg.eigh(cov)  # increasing order
  values, vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
  # The absolute floor keeps constant features (all eigenvalues 0) finite.
  floor = jnp.maximum(PCA_EIGEN_FLOOR * values[0], _common.EPS)
  return (jnp.matmul(centred, vectors, precision=highest)
          * jax.lax.rsqrt(jnp.maximum(values, floor)))


def preprocess_features(features: jax.Array, pca_dim: int) -> jax.Array:
  """DeepCluster's pre-processing before k-means: `pca_whiten` to
  min(pca_dim, D) dimensions, then each row l2-normalised.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0., 0., 1.], [2., 0., 1.], [0., 4., 1.], [2., 4., 1.]])
    >>> y = preprocess_features(x, 256)
    >>> print(y.shape, jnp.round(jnp.linalg.norm(y, axis=1), 4).tolist())
    (4, 3) [1.0, 1.0, 1.0, 1.0]
  """
  _common.check_rank(features, 2, "features", "preprocess_features")
  return _common.l2_normalize(pca_whiten(features,
                                         min(pca_dim, features.shape[1])))


# ------------------------------------------------------ class statistics ---


def balance_weights(labels: jax.Array, num_clusters: int, *,
                    num_groups: int = 1) -> jax.Array:
  r"""Per-example weights that make every pseudo-class count equally.

  DeepCluster samples its training images uniformly over the non-empty
  clusters, then uniformly within the cluster (`UnifLabelSampler`); an
  example of cluster c is drawn with probability 1 / (K' |c|) instead of
  1 / N (K' non-empty clusters). Weighting the loss of uniformly sampled
  examples by the ratio,

      w_n = N / (K' · |c(n)|),        mean_n w_n = 1,

  gives the same expected loss. With `num_groups` = G > 1 the clusters form
  G consecutive blocks of K / G (DeeperCluster's super-clusters, whose
  sampler is uniform over super-classes, then over the sub-classes of each):

      w_n = N / (G' · K'_{g(n)} · |c(n)|),

  G' the non-empty groups and K'_g the non-empty clusters of group g; the
  mean over the dataset is again 1.

  Args:
    labels: int [N] cluster of each example, in [0, num_clusters).
    num_clusters: K, a multiple of `num_groups`.
    num_groups: G; cluster c belongs to group c // (K / G).

  Returns:
    float32 [N] weights.

  Example:
    >>> import jax.numpy as jnp
    >>> w = balance_weights(jnp.array([0, 0, 0, 1]), 3)
    >>> print([round(float(v), 4) for v in w])  # 4 / (2 · 3), 4 / (2 · 1)
    [0.6667, 0.6667, 0.6667, 2.0]
  """
  fn = "balance_weights"
  _common.check_rank(labels, 1, "labels", fn)
  _common.check_count(num_clusters, "num_clusters", fn, minimum=1)
  _common.check_labels(labels, num_clusters, "labels", fn)
  _common.check_count(num_groups, "num_groups", fn, minimum=1)
  if num_clusters % num_groups:
    raise ValueError(f"{fn}: `num_clusters` ({num_clusters}) must be a "
                     f"multiple of `num_groups`, got {num_groups}.")
  per_group = num_clusters // num_groups
  counts = jnp.bincount(labels, length=num_clusters)
  filled = jnp.sum((counts > 0).reshape(num_groups, per_group), axis=1)
  filled_groups = jnp.sum(filled > 0)
  # Every example's own cluster and group are non-empty: no zero divisor.
  denominator = filled_groups * filled[labels // per_group] * counts[labels]
  return (labels.shape[0] / denominator).astype(jnp.float32)


def cluster_statistics(labels: jax.Array, num_clusters: int) -> dict:
  """Scalars describing labellings [H, N], averaged over the H heads.

  "empty_clusters": clusters without an example; "clusters_used_fraction":
  the non-empty fraction; "largest_cluster_fraction": the biggest cluster's
  share of N (a collapse warning); "label_entropy": −Σ_k p_k log p_k of the
  label distribution, in nats (log K when equipartitioned).

  Example:
    >>> import jax.numpy as jnp
    >>> stats = cluster_statistics(jnp.array([[0, 0, 1, 1]]), 3)
    >>> for name, value in sorted(stats.items()):
    ...   print(name, round(float(value), 4))
    clusters_used_fraction 0.6667
    empty_clusters 1.0
    label_entropy 0.6931
    largest_cluster_fraction 0.5
  """
  fn = "cluster_statistics"
  _common.check_rank(labels, 2, "labels", fn)
  _common.check_count(num_clusters, "num_clusters", fn, minimum=1)
  _common.check_labels(labels, num_clusters, "labels", fn)
  counts = jax.vmap(lambda row: jnp.bincount(row, length=num_clusters))(
      labels)
  p = counts / labels.shape[1]
  entropy = -jnp.sum(xlogy(p, p), axis=1)
  return {"empty_clusters": jnp.mean(jnp.sum(counts == 0, axis=1),
                                     dtype=jnp.float32),
          "clusters_used_fraction": jnp.mean(counts > 0, dtype=jnp.float32),
          "largest_cluster_fraction": jnp.mean(jnp.max(p, axis=1)),
          "label_entropy": jnp.mean(entropy)}


def _entropy_and_count(*keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Entropy (nats) of the empirical distribution of the tuples (keys[0][n],
  keys[1][n], ...), and the number of distinct tuples.

  The rows are sorted lexicographically, so equal tuples form runs whose
  lengths are the non-zero cells of the (joint) histogram: O(N) memory
  whatever the number of labels.
  """
  n = keys[0].shape[0]
  order = jnp.lexsort(keys[::-1])  # lexsort's primary key is the last.
  ordered = [k[order] for k in keys]
  changes = jnp.zeros((n - 1,), bool)
  for k in ordered:
    changes = changes | (k[1:] != k[:-1])
  run = jnp.concatenate([jnp.zeros((1,), jnp.int32),
                         jnp.cumsum(changes, dtype=jnp.int32)])
  p = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), run,
                          num_segments=n) / n
  return -jnp.sum(xlogy(p, p)), run[-1] + 1


def normalized_mutual_information(a: jax.Array, b: jax.Array) -> jax.Array:
  r"""NMI(A, B) = I(A; B) / ((H(A) + H(B)) / 2) of two labellings [N].

  With the contingency table n_ij = #{n : a_n = i, b_n = j},

      I(A; B) = Σ_ij (n_ij/N) log(N n_ij / (n_i· n_·j))
              = H(A) + H(B) − H(A, B),

  H(A, B) being the entropy of the table n_ij / N. Its non-zero cells are
  found by sorting the pairs (a_n, b_n): O(N) memory, where a dense table
  of DeepCluster's 10,000 × 10,000 clusters would hold 10⁸ cells. Label
  values are arbitrary integers (permutation-invariant). Same conventions
  as scikit-learn's `normalized_mutual_info_score` (arithmetic mean): 1 when
  both labellings have a single class, 0 when I = 0. DeepCluster logs the
  NMI between consecutive epochs' clusterings to show they stabilise.

  Args:
    a, b: int [N] labellings.

  Returns:
    A float32 scalar in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([0, 0, 1, 1])
    >>> print(float(normalized_mutual_information(a, jnp.array([7, 7, 3, 3]))))
    1.0
    >>> print(float(normalized_mutual_information(a, jnp.array([0, 1, 0, 1]))))
    0.0
  """
  fn = "normalized_mutual_information"
  _common.check_rank(a, 1, "a", fn)
  _common.check_rank(b, 1, "b", fn)
  _common.check_integer(a, "a", fn)
  _common.check_integer(b, "b", fn)
  _common.check_same_shape(fn, a=a, b=b)
  if a.shape[0] == 0:
    raise ValueError(f"{fn}: `a` and `b` must be non-empty, got shape "
                     f"{a.shape}.")
  h_a, count_a = _entropy_and_count(a)
  h_b, count_b = _entropy_and_count(b)
  h_ab, _ = _entropy_and_count(a, b)
  mutual = jnp.maximum(h_a + h_b - h_ab, 0.0)
  nmi = jnp.clip(mutual / jnp.maximum((h_a + h_b) / 2, _common.EPS), 0.0, 1.0)
  return jnp.where((count_a == 1) & (count_b == 1), 1.0, nmi)


# ------------------------------------- the k-means methods' network, update ---


def mlp_network(config) -> models.Model:
  """Backbone and the 2-layer MLP head (`proj_hidden_dim` → `proj_dim`).

  The head's output, before any ReLU, is what k-means clusters (the
  official code drops the final ReLU of its MLP to extract features); the
  classifiers read it after a ReLU (which the official code puts back for
  training).
  """
  return _shared.projector_network(config)


def network_params(tree: dict) -> dict:
  """The `mlp_network` parts of `params` (without the classifiers)."""
  return {k: tree[k] for k in NETWORK_PARTS}


def projection_features(config, params: PyTree, model_state: PyTree,
                        method_state: PseudoLabels, images) -> jax.Array:
  """`DatasetUpdate.features` of the k-means methods: the MLP head's output
  [B, proj_dim] in eval mode (BatchNorm running statistics) on the
  normalised, un-augmented images, float32."""
  del method_state  # The features do not depend on the labels.
  images, _ = _shared.split_batch(images)
  inputs = _pretext.normalize(config, augment.to_float(images))
  outputs, _ = mlp_network(config).apply(network_params(params), model_state,
                                         inputs, train=False)
  return outputs["projection"].astype(jnp.float32)


def relabel(params: dict, state: PseudoLabels, labels: jax.Array,
            num_clusters: int, key: jax.Array, *, heads: Sequence[str],
            head_std: Optional[float], num_groups: int = 1
            ) -> tuple[dict, PseudoLabels, dict]:
  """The end of a k-means method's update, given the new clustering.

  Stores `labels` [N] and their `balance_weights`, re-draws the classifier
  `heads` (keys of `params`, `reinit_heads` with `head_std`; a new
  clustering numbers its clusters afresh, so the old classifier means
  nothing), and logs the NMI with the previous clustering ("nmi_previous";
  0 at the first update, whose previous labels are the initial zeros) and
  `cluster_statistics`.
  """
  keys = jax.random.split(key, len(heads))
  params = {**params, **{name: reinit_heads(params[name], k, std=head_std)
                         for name, k in zip(heads, keys)}}
  metrics = {"nmi_previous": normalized_mutual_information(labels,
                                                           state.labels[0]),
             **cluster_statistics(labels[None], num_clusters)}
  new_state = PseudoLabels(
      labels=labels[None].astype(jnp.int32),
      weights=balance_weights(labels, num_clusters, num_groups=num_groups))
  return params, new_state, metrics


def check_features(config, features: jax.Array, fn: str) -> None:
  """`features` must be [train_size, D]."""
  _common.check_rank(features, 2, "features", fn)
  if features.shape[0] != config.dataset.train_size:
    raise ValueError(
        f"{fn}: `features` must have one row per training example "
        f"(config.dataset.train_size = {config.dataset.train_size}), got "
        f"shape {features.shape}.")
