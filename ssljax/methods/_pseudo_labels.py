"""What DeepCluster, DeeperCluster and SeLa share, written once.

The three methods alternate two stages (Caron et al. 2018, 2019; Asano et
al. 2020):

  1. every few steps (`DatasetUpdate.every`), label every training example
     from the network's features of the whole split: k-means for DeepCluster
     and DeeperCluster, Sinkhorn-Knopp for SeLa;
  2. in between, train the network to classify an augmented view of each
     example as its label, which the loss finds in the method state by the
     batch's "index" (`batch_labels`).

Pieces:

* `PseudoLabels`, the state of the k-means methods (SeLa's holds one): labels
  [H, N] (H heads or one) and per-example loss weights [N] that balance the
  pseudo-classes (`balance_weights`);
* linear classification heads as plain arrays (`init_heads`, `apply_heads`),
  re-drawn after each clustering by DeepCluster and DeeperCluster, and the
  (weighted) cross-entropy;
* DeepCluster's feature pre-processing: PCA-whitening and l2 normalisation
  (`pca_whiten`, `preprocess_features`);
* what the updates log: NMI between two labellings
  (`normalized_mutual_information`, DeepCluster's stability curve) and
  cluster-size statistics (`cluster_statistics`);
* the official networks' fixed Sobel input layer (`sobel`, `setup`), the one
  augmented view each example contributes to a step (`one_view`), and the
  factories' argument checks;
* the k-means methods' network (backbone and MLP head), its eval-mode
  features (`projection_features`) and the relabelling step they share
  (`relabel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from ssljax import _common, models
from ssljax.methods import _shared
from ssljax.methods.base import DatasetUpdate, Method

PyTree = Any

# DeepCluster's initialisation of its classification layer: weights
# ~ N(0, 0.01²), zero biases.
HEAD_INIT_STD = 0.01

# Eigenvalues below this fraction of the largest are raised to it before
# whitening (DeeperCluster's PCA): directions without variance (dead units,
# fewer examples than dimensions) would otherwise be divided by zero.
PCA_EIGEN_FLOOR = 1e-5

# Parts of the k-means methods' network that `models.compose` builds; the
# classifiers are kept beside them in `params`.
NETWORK_PARTS = ("backbone", "projector")

# ImageNet-1k's training images and a step of 256 of them, the official
# runs' defaults: one epoch is IMAGENET_TRAIN_SIZE // 256 steps.
IMAGENET_TRAIN_SIZE = 1_281_167
IMAGENET_EPOCH_STEPS = IMAGENET_TRAIN_SIZE // 256

# The official Sobel layer (DeepCluster's and DeeperCluster's `sobel`): a
# grey image, then a 3×3 cross-correlation (PyTorch's convolution) with the
# horizontal and the vertical Sobel kernel.
SOBEL_KERNELS = (((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
                 ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)))

# The training views of DeepCluster and DeeperCluster: a random resized crop
# of scale (0.08, 1) and a horizontal flip, nothing else (the official
# `RandomResizedCrop(224)`, `RandomHorizontalFlip()`).
CROP_AND_FLIP = _shared.augment_config("byol", jitter_prob=0.0,
                                       grayscale_prob=0.0, blur_prob=0.0,
                                       solarize_prob=0.0)


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


# ---------------------------------------------------------------- checks ---


def check_clusters(num_clusters: int, num_examples: int, fn: str) -> None:
  """1 <= `num_clusters` <= `num_examples`, both ints; else ValueError."""
  _common.check_count(num_examples, "num_examples", fn, minimum=1)
  _common.check_count(num_clusters, "num_clusters", fn, minimum=1)
  if num_clusters > num_examples:
    raise ValueError(f"{fn}: `num_clusters` must be <= `num_examples` "
                     f"({num_examples}), got {num_clusters}.")


def check_features(features: jax.Array, num_examples: int, fn: str) -> None:
  """`features` must be [num_examples, D]."""
  _common.check_rank(features, 2, "features", fn)
  if features.shape[0] != num_examples:
    raise ValueError(
        f"{fn}: `features` must have one row per training example "
        f"(`num_examples` = {num_examples}), got shape {features.shape}.")


# ----------------------------------------------------------------- state ---


def init_labels(num_examples: int, num_heads: int, *, weighted: bool
                ) -> PseudoLabels:
  """All labels 0 (the loop relabels before step 0) and unit weights.

  Example:
    >>> state = init_labels(5, 2, weighted=True)
    >>> print(state.labels.shape, state.weights.tolist())
    (2, 5) [1.0, 1.0, 1.0, 1.0, 1.0]
  """
  return PseudoLabels(
      labels=jnp.zeros((num_heads, num_examples), jnp.int32),
      weights=jnp.ones((num_examples,), jnp.float32) if weighted else None)


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
  return lookup(state, _shared.index_of(batch, fn))


# ----------------------------------------------------------------- heads ---


def dense_init(std: Optional[float] = HEAD_INIT_STD
               ) -> tuple[_shared.DenseInit, _shared.DenseInit]:
  """(kernel, bias) draws of the official linear layers: with `std`,
  N(0, std²) weights and zero biases (DeepCluster's `_initialize_weights`);
  with None, PyTorch's `nn.Linear` default U(±1/√fan_in) for both
  (`_shared.torch_linear_init`; DeeperCluster's and SeLa's layers).

  Example:
    >>> import jax
    >>> kernel, bias = dense_init(0.01)
    >>> print(bias(jax.random.key(0), (2,), 5).tolist())
    [0.0, 0.0]
  """
  if std is None:
    return _shared.torch_linear_init, _shared.torch_linear_init
  return (lambda key, shape, fan_in: std * jax.random.normal(
      key, shape, jnp.float32),
          lambda key, shape, fan_in: jnp.zeros(shape, jnp.float32))


def init_heads(key: jax.Array, *, num_heads: int, in_dim: int,
               num_classes: int, std: Optional[float] = HEAD_INIT_STD) -> dict:
  """H linear classifiers {"kernel": [H, D, K], "bias": [H, K]}.

  With `std` (default 0.01) weights ~ N(0, std²) and zero biases, the
  official DeepCluster's initialisation of its top layer; with std=None
  weights and biases ~ U(−1/√D, 1/√D), PyTorch's `nn.Linear` default that
  the official DeeperCluster and SeLa (ResNet) heads keep (`dense_init`).

  The official SGD decays every parameter, biases included: the configs of
  these methods set `optimizer.exclude_bias_and_norm=False`.

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
  kernel_init, bias_init = dense_init(std)
  kernel_key, bias_key = jax.random.split(key)
  return {"kernel": kernel_init(kernel_key, (num_heads, in_dim, num_classes),
                                in_dim),
          "bias": bias_init(bias_key, (num_heads, num_classes), in_dim)}


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


# ------------------------------------------------------- input and views ---


def sobel(images: jax.Array) -> jax.Array:
  r"""The official DeepCluster / DeeperCluster input layer: image gradients.

  The grey image g = mean over channels (the official 1×1 convolution of
  weights 1/3 on RGB), then the two Sobel responses with zero padding 1,

      G_x[y, x] = Σ_ij S_x[i, j] g[y + i − 1, x + j − 1],   S_x = [[1, 0, −1],
                                                                 [2, 0, −2],
                                                                 [1, 0, −1]],

  and G_y with S_y = S_xᵀ (`SOBEL_KERNELS`): a cross-correlation, as
  PyTorch's convolution. The filters are fixed (not trained).

  Args:
    images: float [B, H, W, C], normalised as the network's input.

  Returns:
    [B, H, W, 2] (G_x, G_y), in the dtype of `images`.

  Example:
    >>> import jax.numpy as jnp
    >>> ramp = jnp.tile(jnp.arange(4.0), (4, 1))[None, :, :, None]  # x → x
    >>> print(sobel(ramp)[0, 1:3, 1:3].tolist())  # inside: G_x = −8, G_y = 0
    [[[-8.0, 0.0], [-8.0, 0.0]], [[-8.0, 0.0], [-8.0, 0.0]]]
  """
  _common.check_rank(images, 4, "images", "sobel")
  gray = jnp.mean(images, axis=-1)
  height, width = gray.shape[1:]
  padded = jnp.pad(gray, ((0, 0), (1, 1), (1, 1)))
  kernels = jnp.asarray(SOBEL_KERNELS, gray.dtype)
  return sum(kernels[:, i, j] * padded[:, i:i + height, j:j + width, None]
             for i in range(3) for j in range(3))


def with_sobel(model: models.Model) -> models.Model:
  """`model` reading `sobel(x)` instead of x (init and apply)."""
  return models.Model(
      init=lambda rng, x: model.init(rng, sobel(x)),
      apply=lambda params, model_state, x, *, train: model.apply(
          params, model_state, sobel(x), train=train))


def setup(backbone: str | models.Model, backbone_kwargs: Optional[Mapping],
          augment: Mapping, dtype: str, *, use_sobel: bool
          ) -> _shared.Setup:
  """`_shared.setup`, the backbone behind the `sobel` layer if `use_sobel`
  (it then serves training, the dataset passes and `encode` alike, as the
  official networks carry it)."""
  bound = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  if not use_sobel:
    return bound
  return bound._replace(backbone=with_sobel(bound.backbone))


def one_view(setup_: _shared.Setup, rng: jax.Array, batch
             ) -> tuple[jax.Array, ...]:
  """The single augmented view of each example that one step trains on (the
  official code draws one per image), as a one-view tuple."""
  return setup_.views.make(rng, batch, count=1)


def one_view_crops(setup_: _shared.Setup) -> Callable:
  """`Method.crops` of `one_view`: the host cuts the first view only."""
  return lambda image_size: setup_.views.specs(image_size)[:1]


# ------------------------------------- the k-means methods' network, update ---


def mlp_network(setup_: _shared.Setup, hidden_dim: int, out_dim: int
                ) -> models.Model:
  """Backbone and the 2-layer MLP head (`hidden_dim` → `out_dim`).

  The head's output, before any ReLU, is what k-means clusters (the
  official code drops the final ReLU of its MLP to extract features); the
  classifiers read it after a ReLU (which the official code puts back for
  training).
  """
  return _shared.with_projector(setup_, hidden_dim, out_dim)


def network_params(tree: dict) -> dict:
  """The `mlp_network` parts of `params` or `model_state`."""
  return {k: tree[k] for k in NETWORK_PARTS}


def projection_features(setup_: _shared.Setup, model: models.Model
                        ) -> Callable:
  """`DatasetUpdate.features` of the k-means methods: the MLP head's output
  [B, out_dim] in eval mode (BatchNorm running statistics) on the
  normalised, un-augmented images, float32."""

  def features(params, model_state, method_state, images):
    del method_state  # The features do not depend on the labels.
    inputs = setup_.views.normalize(_shared.first_image(images))
    outputs, _ = model.apply(network_params(params), model_state, inputs,
                             train=False)
    return outputs["projection"].astype(jnp.float32)

  return features


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


def kmeans_network(fn: str, *, backbone: str | models.Model,
                   backbone_kwargs: Optional[Mapping], augment: Mapping,
                   dtype: str, sobel: bool, proj_hidden_dim: int,
                   proj_dim: int, num_clusters: int, num_examples: int,
                   pca_dim: int, kmeans_iters: int, reassign_every: int
                   ) -> tuple[_shared.Setup, models.Model]:
  """Checks the arguments DeepCluster and DeeperCluster share (ValueError
  naming the argument); their `setup` (with the Sobel layer if `sobel`) and
  `mlp_network`."""
  check_clusters(num_clusters, num_examples, fn)
  _common.check_count(pca_dim, "pca_dim", fn, minimum=1)
  _common.check_count(kmeans_iters, "kmeans_iters", fn)
  _common.check_count(reassign_every, "reassign_every", fn, minimum=1)
  bound = setup(backbone, backbone_kwargs, augment, dtype, use_sobel=sobel)
  return bound, mlp_network(bound, proj_hidden_dim, proj_dim)


def kmeans_method(name: str, setup_: _shared.Setup, model: models.Model, *,
                  heads: Mapping[str, tuple[int, int]], head_dim: int,
                  head_std: Optional[float], reset: tuple[str, ...],
                  loss: Callable, cluster: Callable, num_clusters: int,
                  num_groups: int, pca_dim: int, num_examples: int,
                  every: int) -> Method:
  """The `Method` of DeepCluster and DeeperCluster.

  Args:
    name: the method's name.
    setup_: the bound backbone (behind `sobel` or not), views and dtype.
    model: `mlp_network(setup_, ...)`.
    heads: {params key: (number of heads, classes per head)} of the
      classifiers, kept as `init_heads` arrays beside the network.
    head_dim: their input size, the MLP head's output size.
    head_std: their and the MLP head's linear layers' initialisation
      (`dense_init`).
    reset: the heads that every clustering re-draws, with fresh optimizer
      state (`DatasetUpdate.reset`).
    loss: `loss(params, model_state, labels, weights, batch, rng) ->
      (value, StepOutput)` with the batch's labels [1, B] and weights [B].
    cluster: `cluster(x, key) -> (labels [N], metrics)` of the
      `preprocess_features` rows x.
    num_clusters, num_groups: of `balance_weights`.
    pca_dim: `preprocess_features`'s dimension.
    num_examples: N, the training examples.
    every: steps between two clusterings.
  """
  def init(rng, batch):
    net_rng, mlp_rng, head_rng = jax.random.split(rng, 3)
    params, model_state = _shared.initialize(setup_, model, net_rng, batch)
    # The MLP head's linear layers start as the official ones (`head_std`).
    params["projector"] = _shared.redraw_dense(
        params["projector"], mlp_rng, *dense_init(head_std))
    for key, (head_name, (count, classes)) in zip(
        jax.random.split(head_rng, len(heads)), heads.items()):
      params[head_name] = init_heads(key, num_heads=count, in_dim=head_dim,
                                     num_classes=classes, std=head_std)
    return params, model_state, init_labels(num_examples, 1, weighted=True)

  def method_loss(params, model_state, method_state, batch, rng, step):
    del step  # The targets change only at the clusterings.
    labels, weights = batch_labels(method_state, batch, f"{name}.loss")
    return loss(params, model_state, labels, weights, batch, rng)

  def update(params, model_state, method_state, features, rng, step):
    del model_state, step  # The clustering sees only the features.
    check_features(features, num_examples, f"{name}.update")
    cluster_rng, head_rng = jax.random.split(rng)
    labels, cluster_metrics = cluster(
        preprocess_features(features, pca_dim), cluster_rng)
    params, method_state, metrics = relabel(
        params, method_state, labels, num_clusters, head_rng, heads=reset,
        head_std=head_std, num_groups=num_groups)
    return params, method_state, {**metrics, **cluster_metrics}

  return Method(
      name=name, init=init, loss=method_loss, post_update=_shared.keep,
      encode=_shared.encoder(setup_), crops=one_view_crops(setup_),
      dataset_update=DatasetUpdate(
          every=every, features=projection_features(setup_, model),
          update=update, reset=reset))
