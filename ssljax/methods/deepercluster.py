"""DeeperCluster: rotation prediction and DeepCluster in one hierarchical loss.

Caron, Bojanowski, Mairal & Joulin, "Unsupervised Pre-Training of Image
Features on Non-Curated Data", ICCV 2019; the official code
(facebookresearch/DeeperCluster, `main.py`, `src/trainer.py`,
`src/clustering.py`).

Each target is a pair (rotation r of the image among 0°, 90°, 180°, 270°,
cluster of the un-rotated image). The k clusters come from a two-level
k-means of DeepCluster's features (`hierarchical_kmeans`): m super-clusters
of the whole set, then k/m sub-clusters inside each super-cluster. The 4m
super-classes are the pairs (super-cluster c, rotation r), numbered
s = 4c + r (the official code's process-group layout); the sub-class is
the sub-cluster j within c. With DeepCluster's network (the fixed Sobel
layer, backbone f and MLP head g), h = ReLU(g(f(x))) feeds a super-class
classifier V (4m outputs) and one sub-class classifier W_s (k/m outputs)
per super-class, and the loss of a rotated view x of example n is (the
official `train_network`)

    ℓ = w_n · [CE(V h, s) + CE(W_s h, j)],       s = 4 c(n) + r,

w_n the class-balancing weight of `_pseudo_labels.balance_weights` with
the super-clusters as groups: the official sampler draws a super-class
uniformly and a sub-class uniformly within it. Each example's view (a
random resized crop and a flip) is rotated by a random multiple of 90°
(`ssljax.pretext.random_rotation`): in the official code each image comes
in one rotation, that of the process group that loads it. The clustering
(every `reassign_every` steps, 3 epochs officially) runs on eval-mode
features g(f(x)) of the un-rotated, un-augmented images, PCA-whitened and
l2-normalised as in DeepCluster; after it the sub-class classifiers, and
the super-class one when m > 1, are re-drawn (PyTorch's default
initialisation of `nn.Linear`, as the official `build_prediction_layer`
and, at the start, the MLP head's linear layers)
with fresh optimizer state (`DatasetUpdate.reset`); with m = 1 the
super-classes are the rotations alone, which do not change, and the
official code keeps that layer and its optimizer.

Defaults are the paper's run (`main.sh`): m = 4 super-clusters (16
super-classes), k = 320,000 clusters, PCA to 4096, 10 k-means iterations,
Sobel, clustering every 3 epochs of the 95,920,149 YFCC100M images in steps
of 48 × 64; the ImageNet presets use DeepCluster's k = 10,000.

Where this differs from the official code (docs/fidelity.md#deepercluster): one
k-means over all rows with super-cluster codes instead of one k-means per
super-cluster (`hierarchical_kmeans`), a BatchNorm MLP head on a ResNet
rather than VGG-16's classifier, the sub-class layers of all super-classes
held (and evaluated on every row) on each device where the official code
shards them, one per process group, and the Sobel layer's padding (the
official VGG pads the image by 2 before a valid Sobel convolution, 1 here,
keeping the image's size).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.deepercluster(
  ...     backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...     num_clusters=4, num_super_clusters=2, num_examples=8)
  >>> images = jnp.zeros((8, 16, 16, 1), jnp.uint8)
  >>> params, model_state, labels = method.init(jax.random.key(0), images)
  >>> print(params["super_classifier"]["kernel"].shape,
  ...       params["sub_classifier"]["kernel"].shape)
  (1, 8, 8) (8, 8, 2)
  >>> batch = {"image": images[:4], "index": jnp.arange(4)}
  >>> loss, out = method.loss(params, model_state, labels, batch,
  ...                         jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import _common, models, pretext
from ssljax.losses import classification
from ssljax.methods import _pseudo_labels, _shared
from ssljax.methods.base import Method
from ssljax.state import kmeans

SUPER_CLASSIFIER = "super_classifier"
SUB_CLASSIFIER = "sub_classifier"

# The official run: the YFCC100M images it could download, and its global
# batch (48 images on each of 64 processes).
YFCC100M_IMAGES = 95_920_149
OFFICIAL_BATCH = 48 * 64


def hierarchical_kmeans(x: jax.Array, num_clusters: int,
                        num_super_clusters: int, *, iterations: int,
                        key: jax.Array) -> jax.Array:
  r"""Two-level k-means: m super-clusters, then k/m sub-clusters in each.

  First c = k-means(x; m) ("random" seeding, as faiss). Then the rows are
  extended with a one-hot code of their super-cluster,

      x'_n = [x_n, L · e_{c(n)}],      L = 2 max_n ||x_n|| + 1,

  and one k-means with k centroids runs on x', seeded for each
  super-cluster with k/m of its rows (distinct while it has that many, as
  the official code's draw without replacement; it cycles through them
  otherwise). A row is at squared distance at most (2 max ||x||)² from a
  centroid of its own super-cluster and more than 2L² from any other, so
  every Lloyd assignment stays inside the super-clusters and the
  iterations are those of m separate k-means. The exception is the
  re-seeding of an empty cluster, which may split a cluster of another
  super-cluster; a last assignment against the centroids with their home
  codes (centroid t belongs to super-cluster t // (k/m)) puts every row
  back in a sub-cluster of its own super-cluster.

  Args:
    x: [N, D] rows (DeepCluster's whitened, normalised features).
    num_clusters: k, the total number of sub-clusters, k <= N.
    num_super_clusters: m, a divisor of k.
    iterations: Lloyd iterations of each level.
    key: PRNG key.

  Returns:
    int32 [N] labels y: row n is in super-cluster y // (k/m) and sub-cluster
    y % (k/m) of it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.array([[0., 0.], [0., 1.], [9., 0.], [9., 1.],
    ...                [0., 50.], [0., 51.], [9., 50.], [9., 51.]])
    >>> y = hierarchical_kmeans(x, 4, 2, iterations=5, key=jax.random.key(0))
    >>> # two super-clusters (top, bottom) of two sub-clusters (left, right)
    >>> print(len(set((y // 2).tolist()[:4])), len(set(y.tolist())))
    1 4
  """
  fn = "hierarchical_kmeans"
  _common.check_rank(x, 2, "x", fn)
  _common.check_count(num_clusters, "num_clusters", fn, minimum=1)
  _common.check_count(num_super_clusters, "num_super_clusters", fn,
                      minimum=1)
  if num_clusters % num_super_clusters or num_clusters > x.shape[0]:
    raise ValueError(
        f"{fn}: `num_clusters` ({num_clusters}) must be a multiple of "
        f"`num_super_clusters` ({num_super_clusters}) and at most the number "
        f"of rows of `x` ({x.shape[0]}).")
  x = _common.to_compute(jax.lax.stop_gradient(x))
  n = x.shape[0]
  per_super = num_clusters // num_super_clusters
  super_key, seed_key, sub_key, assign_key = jax.random.split(key, 4)
  top = kmeans(x, num_super_clusters, iterations=iterations, key=super_key,
               seeding="random").assignments
  scale = 2.0 * jnp.max(_common.safe_norm(x)) + 1.0

  def with_code(rows, super_ids):
    return jnp.concatenate(
        [rows, scale * jax.nn.one_hot(super_ids, num_super_clusters,
                                      dtype=x.dtype)], axis=1)

  def seeds(c, key):
    # A random order of the super-cluster's rows (ranked first by a Gumbel
    # draw), cycled through when it has fewer than k/m rows.
    members = top == c
    order = jnp.argsort(jnp.where(members, -jax.random.gumbel(key, (n,)),
                                  jnp.inf))
    return order[jnp.arange(per_super) % jnp.maximum(jnp.sum(members), 1)]

  rows = jax.vmap(seeds)(jnp.arange(num_super_clusters),
                         jax.random.split(seed_key, num_super_clusters))
  home = jnp.arange(num_clusters) // per_super
  augmented = with_code(x, top)
  centroids = kmeans(augmented, num_clusters, iterations=iterations,
                     key=sub_key,
                     init=with_code(x[rows.reshape(-1)], home)).centroids
  final = kmeans(augmented, num_clusters, iterations=0, key=assign_key,
                 init=with_code(centroids[:, :x.shape[1]], home))
  return final.assignments


def hierarchical_targets(labels: jax.Array, rotations: jax.Array, *,
                         num_clusters: int, num_super_clusters: int
                         ) -> tuple[jax.Array, jax.Array]:
  """Super-class s = 4c + r and sub-class j of rotated copies.

  Args:
    labels: int [R] cluster y of each row's image (`hierarchical_kmeans`:
      super-cluster c = y // (k/m), sub-cluster j = y % (k/m)).
    rotations: int [R] rotation r in 0..3 of each row.
    num_clusters, num_super_clusters: k and m.

  Returns:
    (super-class [R] in [0, 4m), sub-class [R] in [0, k/m)).

  Example:
    >>> import jax.numpy as jnp
    >>> s, j = hierarchical_targets(jnp.array([0, 5, 5]), jnp.array([1, 0, 3]),
    ...                             num_clusters=6, num_super_clusters=2)
    >>> print(s.tolist(), j.tolist())
    [1, 4, 7] [0, 2, 2]
  """
  per_super = num_clusters // num_super_clusters
  super_class = pretext.NUM_ROTATIONS * (labels // per_super) + rotations
  return super_class, labels % per_super


def hierarchical_loss(super_logits: jax.Array, sub_logits: jax.Array,
                      super_class: jax.Array, sub_class: jax.Array,
                      weights: jax.Array) -> jax.Array:
  r"""mean_n w_n [CE(super_logits_n, s_n) + CE(sub_logits[s_n, n], j_n)].

  Args:
    super_logits: [R, S] scores of the S = 4m super-classes.
    sub_logits: [S, R, K'] scores of every super-class's sub-classifier;
      row n is scored by that of its own super-class s_n.
    super_class, sub_class: int [R] targets (`hierarchical_targets`).
    weights: [R] per-row loss weights.

  Example:
    >>> import jax.numpy as jnp
    >>> loss = hierarchical_loss(jnp.zeros((1, 4)), jnp.zeros((4, 1, 2)),
    ...                          jnp.array([3]), jnp.array([1]), jnp.ones(1))
    >>> print(round(float(loss), 4))  # log 4 + log 2
    2.0794
  """
  fn = "hierarchical_loss"
  _common.check_rank(super_logits, 2, "super_logits", fn)
  _common.check_rank(sub_logits, 3, "sub_logits", fn)
  rows, num_super = super_logits.shape
  if sub_logits.shape[:2] != (num_super, rows):
    raise ValueError(
        f"{fn}: `sub_logits` must be [S, R, K'] = [{num_super}, {rows}, K'] "
        f"for `super_logits` {super_logits.shape}, got {sub_logits.shape}.")
  own = jnp.take_along_axis(sub_logits, super_class[None, :, None],
                            axis=0)[0]
  return (classification.cross_entropy(super_logits, super_class, weights)
          + classification.cross_entropy(own, sub_class, weights))


def deepercluster(*, backbone: str | models.Model = "resnet50",
                  backbone_kwargs: Mapping | None = None,
                  augment: Mapping = _pseudo_labels.CROP_AND_FLIP,
                  dtype: str = "float32", proj_hidden_dim: int = 4096,
                  proj_dim: int = 4096, num_clusters: int = 320000,
                  num_super_clusters: int = 4, pca_dim: int = 4096,
                  kmeans_iters: int = 10,
                  reassign_every: int = 3 * (YFCC100M_IMAGES
                                             // OFFICIAL_BATCH),
                  num_examples: int = YFCC100M_IMAGES,
                  sobel: bool = True) -> Method:
  """DeeperCluster (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`.
    augment: the recipe whose first view each step rotates and trains on
      (default: a random resized crop and a flip).
    proj_hidden_dim, proj_dim: the MLP head, whose output is clustered.
    num_clusters: k, all sub-clusters together.
    num_super_clusters: m, a divisor of k (4m super-classes).
    pca_dim: dimensions kept by the PCA-whitening before k-means.
    kmeans_iters: Lloyd iterations of each level.
    reassign_every: steps between two clusterings (3 epochs officially).
    num_examples: training examples N (rows of the per-example labels).
    sobel: put the fixed Sobel layer in front of the backbone (official).
  """
  fn = "deepercluster"
  setup, model = _pseudo_labels.kmeans_network(
      fn, backbone=backbone, backbone_kwargs=backbone_kwargs,
      augment=augment, dtype=dtype, sobel=sobel,
      proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
      num_clusters=num_clusters, num_examples=num_examples, pca_dim=pca_dim,
      kmeans_iters=kmeans_iters, reassign_every=reassign_every)
  _common.check_count(num_super_clusters, "num_super_clusters", fn,
                      minimum=1)
  if num_clusters % num_super_clusters:
    raise ValueError(f"{fn}: `num_clusters` ({num_clusters}) must be a "
                     f"multiple of `num_super_clusters`, got "
                     f"{num_super_clusters}.")
  num_super_classes = pretext.NUM_ROTATIONS * num_super_clusters

  def loss(params, model_state, labels, weights, batch, rng):
    view_rng, rotation_rng = jax.random.split(rng)
    view, = _pseudo_labels.one_view(setup, view_rng, batch)
    rotated, rotations = pretext.random_rotation(rotation_rng, view)
    outputs, model_state = _shared.forward(
        model, _pseudo_labels.network_params(params), model_state,
        (rotated,), joint=False)
    hidden = jax.nn.relu(outputs["projection"][0])
    super_class, sub_class = hierarchical_targets(
        labels[0], rotations, num_clusters=num_clusters,
        num_super_clusters=num_super_clusters)
    super_logits = _pseudo_labels.apply_heads(params[SUPER_CLASSIFIER],
                                              hidden)[0]
    sub_logits = _pseudo_labels.apply_heads(params[SUB_CLASSIFIER], hidden)
    value = hierarchical_loss(super_logits, sub_logits, super_class,
                              sub_class, weights)
    # The collapse monitors see the features of the rotated views.
    return value, _shared.step_output(
        _shared.Online((rotated,), outputs, model_state),
        {"super_class_accuracy": classification.accuracy(super_logits,
                                                          super_class)})

  def cluster(x, key):
    return hierarchical_kmeans(x, num_clusters, num_super_clusters,
                               iterations=kmeans_iters, key=key), {}

  # With one super-cluster the super-classes are the rotations: the
  # official code keeps that layer (and its optimizer) across clusterings.
  reset = ((SUB_CLASSIFIER,) if num_super_clusters == 1
           else (SUPER_CLASSIFIER, SUB_CLASSIFIER))
  return _pseudo_labels.kmeans_method(
      fn, setup, model,
      heads={SUPER_CLASSIFIER: (1, num_super_classes),
             SUB_CLASSIFIER: (num_super_classes,
                              num_clusters // num_super_clusters)},
      head_dim=proj_dim, head_std=None, reset=reset, loss=loss,
      cluster=cluster, num_clusters=num_clusters,
      num_groups=num_super_clusters, pca_dim=pca_dim,
      num_examples=num_examples, every=reassign_every)
