"""DeeperCluster: rotation prediction and DeepCluster in one hierarchical loss.

Caron, Bojanowski, Mairal & Joulin, "Unsupervised Pre-Training of Image
Features on Non-Curated Data", ICCV 2019.

Each target is a pair (rotation r of the image among 0°, 90°, 180°, 270°,
cluster of the un-rotated image). The k clusters come from a two-level
k-means of DeepCluster's features (`hierarchical_kmeans`): m super-clusters
of the whole set, then k/m sub-clusters inside each super-cluster. The 4m
super-classes are the pairs (super-cluster c, rotation r), numbered
s = 4c + r (the official code's process-group layout); the sub-class is
the sub-cluster j within c. With the network backbone f and MLP head g of
DeepCluster (`_pseudo_labels.mlp_network`), h = ReLU(g(f(x))) feeds a
super-class classifier V (4m outputs) and one sub-class classifier W_s (k/m
outputs) per super-class, and the loss of a rotated view x of example n is
(the official `train_network`)

    ℓ = w_n · [CE(V h, s) + CE(W_s h, j)],       s = 4 c(n) + r,

w_n the class-balancing weight of `_pseudo_labels.balance_weights` with
the super-clusters as groups: the official sampler draws a super-class
uniformly and a sub-class uniformly within it. Each example's view is
rotated by a random multiple of 90° (`ssljax.pretext.random_rotation`): in
the official code each image comes in one rotation, that of the process
group that loads it. The clustering (every
`reassign_epochs` = 3 epochs) runs on eval-mode features g(f(x)) of the
un-rotated, un-augmented images, PCA-whitened and l2-normalised as in
DeepCluster; after it both classifiers are re-drawn (PyTorch's default
initialisation of `nn.Linear`, as the official `build_prediction_layer`)
with fresh optimizer state (`DatasetUpdate.reset`).

Defaults are the paper's run: m = 4 super-clusters (16 super-classes),
k = 320,000 clusters, PCA to 4096, 10 k-means iterations, clustering every
3 epochs; the ImageNet presets use DeepCluster's k = 10,000.

Differences from the paper:
* the paper's sub-clustering runs one k-means per super-cluster; here one
  k-means over all rows, each row extended by a one-hot code of its
  super-cluster scaled so that no assignment crosses super-clusters, and
  seeded with k/m rows of each super-cluster (see `hierarchical_kmeans`):
  the same Lloyd iterations, except that an empty sub-cluster may be
  re-seeded from another super-cluster's rows;
* the official code keeps the super-class layer when m = 1 (its targets,
  the rotations, do not change); here it is re-drawn at every clustering
  with the sub-class layers;
* no Sobel filtering, and a BatchNorm MLP head on a ResNet or small CNN
  rather than VGG-16's classifier;
* the sub-class layers of all super-classes are held (and evaluated on
  every row) on each device; the official code shards them, one per
  process group.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import deepercluster
  >>> method = deepercluster.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, batch_size=4, dataset=dict(train_size=8),
  ...     method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                      proj_dim=8, num_clusters=4, num_super_clusters=2)
  >>> images = jnp.zeros((8, 16, 16, 1), jnp.uint8)
  >>> params, model_state, labels = method.init(config, jax.random.key(0),
  ...                                           images)
  >>> print(params["super_classifier"]["kernel"].shape,
  ...       params["sub_classifier"]["kernel"].shape)
  (1, 8, 8) (8, 8, 2)
  >>> batch = {"image": images[:4], "index": jnp.arange(4)}
  >>> loss, out = method.loss(config, params, model_state, labels, batch,
  ...                         jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import _common, pretext
from ssljax.methods import _pretext, _pseudo_labels, _shared
from ssljax.methods.base import DatasetUpdate, Method, StepOutput
from ssljax.state import kmeans

SUPER_CLASSIFIER = "super_classifier"
SUB_CLASSIFIER = "sub_classifier"


def default_config() -> ml_collections.ConfigDict:
  """DeeperCluster's hyper-parameters (the paper's YFCC100M run)."""
  return ml_collections.ConfigDict(dict(
      name="deepercluster", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), proj_hidden_dim=4096, proj_dim=4096,
      num_clusters=320000, num_super_clusters=4, pca_dim=4096,
      kmeans_iters=10, reassign_epochs=3.0))


def _check(config, fn: str) -> None:
  _pseudo_labels.check_config(config, fn, counts={
      "num_super_clusters": 1, "pca_dim": 1, "kmeans_iters": 0})
  method = config.method
  if method.num_clusters % method.num_super_clusters:
    raise ValueError(
        f"{fn}: `config.method.num_clusters` ({method.num_clusters}) must be "
        f"a multiple of `config.method.num_super_clusters`, got "
        f"{method.num_super_clusters}.")


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
  return (_pseudo_labels.cross_entropy(super_logits, super_class, weights)
          + _pseudo_labels.cross_entropy(own, sub_class, weights))


def init(config, rng, images):
  _check(config, "deepercluster.init")
  method = config.method
  net_rng, super_rng, sub_rng = jax.random.split(rng, 3)
  params, model_state, _ = _shared.init(config, net_rng, images,
                                        _pseudo_labels.mlp_network(config))
  num_super_classes = pretext.NUM_ROTATIONS * method.num_super_clusters
  params[SUPER_CLASSIFIER] = _pseudo_labels.init_heads(
      super_rng, num_heads=1, in_dim=method.proj_dim,
      num_classes=num_super_classes, std=None)
  params[SUB_CLASSIFIER] = _pseudo_labels.init_heads(
      sub_rng, num_heads=num_super_classes, in_dim=method.proj_dim,
      num_classes=method.num_clusters // method.num_super_clusters,
      std=None)
  return params, model_state, _pseudo_labels.init_state(config, 1,
                                                        weighted=True)


def loss(config, params, model_state, method_state, batch, rng, step):
  del step  # The targets change only at the clusterings.
  method = config.method
  labels, weights = _pseudo_labels.batch_labels(method_state, batch,
                                                "deepercluster.loss")
  images, _ = _shared.split_batch(batch)
  view_rng, rotation_rng = jax.random.split(rng)
  rotated, rotations = pretext.random_rotation(
      rotation_rng, _pretext.view(config, view_rng, images))
  outputs, model_state = _pseudo_labels.mlp_network(config).apply(
      _pseudo_labels.network_params(params), model_state,
      _pretext.normalize(config, rotated), train=True)
  hidden = jax.nn.relu(outputs["projection"])
  super_class, sub_class = hierarchical_targets(
      labels[0], rotations, num_clusters=method.num_clusters,
      num_super_clusters=method.num_super_clusters)
  super_logits = _pseudo_labels.apply_heads(params[SUPER_CLASSIFIER],
                                            hidden)[0]
  sub_logits = _pseudo_labels.apply_heads(params[SUB_CLASSIFIER], hidden)
  value = hierarchical_loss(super_logits, sub_logits, super_class, sub_class,
                            weights)
  metrics = {"super_class_accuracy": _pseudo_labels.accuracy(super_logits,
                                                              super_class)}
  # The collapse monitors see the features of the rotated views.
  return value, StepOutput(
      model_state=model_state, metrics=metrics, update={},
      embeddings=jax.lax.stop_gradient(outputs["features"]))


def update(config, params, model_state, method_state, features, rng, step):
  """`DatasetUpdate.update`: `hierarchical_kmeans` of the whitened
  features, new labels and weights, fresh classifiers; logs NMI and cluster
  sizes."""
  del model_state, step  # The clustering sees only the features.
  fn = "deepercluster.update"
  _check(config, fn)
  _pseudo_labels.check_features(config, features, fn)
  method = config.method
  cluster_rng, head_rng = jax.random.split(rng)
  labels = hierarchical_kmeans(
      _pseudo_labels.preprocess_features(features, method.pca_dim),
      method.num_clusters, method.num_super_clusters,
      iterations=method.kmeans_iters, key=cluster_rng)
  return _pseudo_labels.relabel(
      params, method_state, labels, method.num_clusters, head_rng,
      heads=(SUPER_CLASSIFIER, SUB_CLASSIFIER), head_std=None,
      num_groups=method.num_super_clusters)


METHOD = Method(
    name="deepercluster", init=init, loss=loss,
    post_update=_pretext.keep_state, encode=_shared.encode,
    default_config=default_config,
    dataset_update=DatasetUpdate(
        every=_pseudo_labels.every,
        features=_pseudo_labels.projection_features, update=update,
        reset=(SUPER_CLASSIFIER, SUB_CLASSIFIER)))
