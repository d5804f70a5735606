"""PCL: contrast instances and the prototypes of a k-means of the dataset.

Li, Zhou, Xiong & Hoi, "Prototypical Contrastive Learning of Unsupervised
Representations", ICLR 2021 (PCL v2: MoCo v2's MLP head and augmentation),
and the official salesforce/PCL `main_pcl.py` and `pcl/builder.py`.

PCL is expectation-maximisation on top of MoCo v2. E-step, once per epoch
(`DatasetUpdate`, every `train_size // batch_size` steps): the momentum
encoder embeds the whole train split in eval mode, v'_i = normalize(g'(x_i)),
and for each of M granularities C_m (`num_clusters`, ImageNet: 25k, 50k,
100k) k-means gives every example a cluster s_m(i), centroids c^m_j and a
concentration per cluster (Eq. 12 as the official code estimates it, see
`ssljax.losses.pcl_concentration`):

    φ^m_j = (Σ_{i∈j} ||v'_i − c^m_j|| / Z_j) / log(Z_j + α),  α = 10,

then clamped to its 10th-90th percentiles and rescaled to mean τ = 0.2.
The prototypes are the normalised centroids ĉ^m_j. M-step, every train step,
with q = normalize(g(view 1)) the query and k = normalize(g'(view 2)) the key
of example b (`batch["index"]` gives its row i in the dataset):

    loss = InfoNCE(q, k, queue; τ)
           + [t >= warm-up] · 1/M Σ_m −log(exp(q·ĉ^m_s / φ^m_s)
                                           / Σ_j exp(q·ĉ^m_j / φ^m_j)),

s = s_m(i), i.e. `ssljax.losses.moco` plus `ssljax.losses.proto_nce`
(Eq. 11, ProtoNCE). The prototype term is off for the first
`warmup_epochs` epochs (the official 20 of 200), during which the dataset
pass skips k-means and the state keeps its placeholders. The keys are
enqueued FIFO after the step; the momentum encoder is the EMA
θ' ← m·θ' + (1 − m)·θ (PCL's m = 0.999 by default).

Followed from the official code rather than the paper: the concentration's
clamping and rescaling (the paper gives only Eq. 12); faiss k-means as
`run_kmeans` configures it, Euclidean on the normalised embeddings, centroids
initialised with k random rows (`seeding="random"`), 20 iterations, the best
of `kmeans_redo` = 5 runs by inertia, empty clusters re-seeded by splitting,
distances for φ measured to the raw centroids, which are normalised only
afterwards; one InfoNCE direction (query of view 1, key of view 2, as
`builder.py`; ssljax's `moco_v2` symmetrises) and one temperature τ for
InfoNCE and the concentrations' mean.

Not followed, and why:
  * ProtoNCE's denominator: the official code contrasts each query with the
    batch's B positive prototypes (repeats included) and r = 16384
    prototypes sampled from the others; `proto_nce` uses every prototype
    once, the full sum that the sample stands for. The sample needs
    r <= C − B, which no preset but ImageNet's meets (mnist5k: C = 20), and
    the full sum costs B × C logits per clustering, at most 256 × 100k.
  * faiss subsamples its training set to 1000 rows per centroid; every
    preset here has fewer rows per centroid than that, so the cap is not
    implemented and k-means always sees all N rows.
  * faiss seeds clustering m with the integer m every epoch; here each
    clustering draws from the key the training loop passes (`fold_in(rng,
    m)`), so epochs differ in their initialisation.
  * No shuffling BatchNorm (see `moco_v2`): under `jax.jit` BatchNorm
    statistics are global over the batch.
  * The official embeddings for clustering come from a resize-and-center-
    crop of each image; here from the image as the input pipeline stores it
    (normalised, no crop), like `encode`.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import pcl
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, batch_size=4, dataset=dict(train_size=8),
  ...     method=pcl.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      queue_size=16, num_clusters=(2, 3), warmup_epochs=1)
  >>> images = jnp.zeros((4, 16, 16, 1), jnp.uint8)
  >>> _, _, state = pcl.init(config, jax.random.key(0), images)
  >>> print([c.prototypes.shape for c in state.clusterings])
  [(2, 8), (3, 8)]
  >>> print(pcl.every(config), pcl.warmup_steps(config))  # in steps
  2 2
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import _common
from ssljax.data import augment
from ssljax.losses import clustering as clustering_losses
from ssljax.losses import contrastive
from ssljax.methods import _pretext, _shared, moco_v2
from ssljax.methods.base import DatasetUpdate, Method
from ssljax.state import _kmeans
from ssljax.state import queue as queue_lib

_FN = "pcl"


class Clustering(NamedTuple):
  """One k-means clustering of the train split, as the loss reads it.

  Attributes:
    labels: [N] int32 cluster of every train example (row of the dataset).
    prototypes: [C, D] unit-norm centroids.
    concentration: [C] per-cluster temperatures φ (mean τ).
  """
  labels: jax.Array
  prototypes: jax.Array
  concentration: jax.Array


class PCLState(NamedTuple):
  """PCL's `method_state`: MoCo's momentum encoder and queue, and one
  `Clustering` per entry of `config.method.num_clusters`."""
  target: _shared.Target
  queue: queue_lib.QueueState
  clusterings: tuple[Clustering, ...]


def default_config() -> ml_collections.ConfigDict:
  """PCL v2's hyper-parameters (the official ImageNet recipe)."""
  return ml_collections.ConfigDict(dict(
      name="pcl", backbone="resnet50", backbone_kwargs={},
      augment=moco_v2.default_config().augment,
      proj_hidden_dim=2048, proj_dim=128, temperature=0.2, queue_size=16384,
      base_momentum=0.999, final_momentum=0.999,
      num_clusters=(25000, 50000, 100000), warmup_epochs=20, alpha=10.0,
      kmeans_iterations=20, kmeans_redo=5, kmeans_seeding="random"))


# ---------------------------------------------------------------- config ---


def every(config) -> int:
  """Steps between two dataset passes: one epoch, train_size // batch_size."""
  steps = config.dataset.train_size // config.batch_size
  if steps < 1:
    raise ValueError(
        f"{_FN}: `config.batch_size` ({config.batch_size}) must be <= "
        f"`config.dataset.train_size` ({config.dataset.train_size}): one "
        f"epoch must hold at least one step.")
  return steps


def warmup_steps(config) -> int:
  """First step with the ProtoNCE term: `warmup_epochs` × `every(config)`."""
  return config.method.warmup_epochs * every(config)


def check_config(config) -> None:
  """Raises ValueError naming the key of an invalid PCL setting."""
  method, size = config.method, config.dataset.train_size
  every(config)
  counts = method.num_clusters
  if not (isinstance(counts, Sequence) and counts and all(
      isinstance(c, numbers.Integral) and not isinstance(c, bool)
      and 1 <= c < size for c in counts)):
    # C < N leaves some cluster two members, which the concentration needs.
    raise ValueError(
        f"{_FN}: `config.method.num_clusters` must be a non-empty tuple of "
        f"ints in [1, train_size) = [1, {size}), got {counts!r}.")
  _common.check_count(method.warmup_epochs, "config.method.warmup_epochs",
                      _FN)
  _common.check_count(method.kmeans_iterations,
                      "config.method.kmeans_iterations", _FN, minimum=1)
  _common.check_count(method.kmeans_redo, "config.method.kmeans_redo", _FN,
                      minimum=1)
  if method.kmeans_seeding not in _kmeans.SEEDINGS:
    raise ValueError(
        f"{_FN}: `config.method.kmeans_seeding` must be one of "
        f"{_kmeans.SEEDINGS}, got {method.kmeans_seeding!r}.")
  _common.check_non_negative(method.alpha, "config.method.alpha", _FN)
  _common.check_positive(method.temperature, "config.method.temperature",
                         _FN)


# ------------------------------------------------------------- E-step ---


def cluster(features: jax.Array, num_clusters: int, *, key: jax.Array,
            iterations: int = 20, redo: int = 5, seeding: str = "random",
            alpha: float = 10.0, temperature: float = 0.2) -> Clustering:
  r"""PCL's clustering of embeddings: labels, prototypes, concentrations.

  Runs `ssljax.state.kmeans` (Euclidean) `redo` times from independent
  seedings and keeps the run of least inertia Σ_i ||v_i − c_{s(i)}||², as
  faiss's `nredo` does; then

      φ = pcl_concentration(v, s, c; α, τ),      ĉ_j = c_j / ||c_j||,

  the concentrations measured to the raw centroids and the prototypes
  normalised afterwards, as the official `run_kmeans`.

  Args:
    features: [N, D] embeddings (PCL: l2-normalised momentum features).
    num_clusters: C, 1 <= C < N.
    key: PRNG key of the seedings and the empty-cluster splits.
    iterations: Lloyd iterations of each run.
    redo: independent k-means runs, the best kept.
    seeding: "random" (faiss's, PCL's) or "k-means++".
    alpha: smoothing α of the concentration.
    temperature: mean τ of the concentrations.

  Returns:
    A `Clustering` of [N] labels, [C, D] prototypes and [C] concentrations.

  References:
    Li et al., "Prototypical Contrastive Learning of Unsupervised
    Representations", ICLR 2021, Sec. 3.3 and Eq. 12; salesforce/PCL
    `main_pcl.py` (`run_kmeans`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.methods.pcl import cluster
    >>> v = jnp.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0], [0.28, 0.96],
    ...                [0.6, 0.8]])
    >>> c = cluster(v, 2, key=jax.random.key(0), redo=3)
    >>> labels = c.labels.tolist()
    >>> print(labels[0] == labels[1] != labels[2] == labels[3] == labels[4])
    True
    >>> print(jnp.round(jnp.linalg.norm(c.prototypes, axis=1), 4).tolist())
    [1.0, 1.0]
  """
  fn = "pcl.cluster"
  _common.check_rank(features, 2, "features", fn)
  _common.check_count(redo, "redo", fn, minimum=1)
  features = _common.to_compute(jax.lax.stop_gradient(features))
  run = functools.partial(_kmeans.kmeans, features, num_clusters,
                          iterations=iterations, seeding=seeding)
  # One run at a time: N × D rows are shared, but each run's distances and
  # assignments would be held `redo` times under a vmap.
  runs = jax.lax.map(lambda k: run(key=k), jax.random.split(key, redo))
  best = jax.tree.map(lambda x: x[jnp.argmin(runs.inertia)], runs)
  concentration = clustering_losses.pcl_concentration(
      features, best.assignments, best.centroids, alpha=alpha,
      temperature=temperature)
  return Clustering(best.assignments, _common.l2_normalize(best.centroids),
                    concentration)


def momentum_features(config, params, model_state, method_state: PCLState,
                      images) -> jax.Array:
  """[B, D] float32 l2-normalised embeddings of the momentum encoder
  (backbone and head, eval mode) of uint8 images, PCL's clustered features."""
  del params, model_state  # The official code clusters momentum features.
  images, _ = _shared.split_batch(images)
  # `encode`'s input: the dataset's mean and std, no augmentation.
  x = _pretext.normalize(config, augment.to_float(images))
  target = method_state.target
  out, _ = network(config).apply(target.params, target.model_state, x,
                                 train=False)
  return _common.l2_normalize(
      _common.to_compute(out["projection"])).astype(jnp.float32)


def update(config, params, model_state, method_state: PCLState,
           features: jax.Array, rng: jax.Array, step):
  """PCL's E-step over the train split's [N, D] embeddings `features`.

  From `warmup_steps(config)` on, clustering m of `method_state` becomes
  `cluster(features, num_clusters[m], key=fold_in(rng, m), ...)`; before,
  k-means is skipped and the clusterings stay as they are. Parameters are
  returned unchanged. Metrics: "clustered" (1 when k-means ran) and, per
  clustering m, "concentration_mean_m" (τ by construction once clustered),
  "concentration_std_m" and "empty_clusters_m".
  """
  del model_state
  check_config(config)
  method = config.method
  shape = (config.dataset.train_size, method.proj_dim)
  if jnp.shape(features) != shape:
    raise ValueError(
        f"pcl.update: `features` must have shape [train_size, proj_dim] = "
        f"{list(shape)}, got {jnp.shape(features)}.")
  features = jnp.asarray(features, jnp.float32)

  def recluster():
    return tuple(
        cluster(features, c, key=jax.random.fold_in(rng, m),
                iterations=method.kmeans_iterations, redo=method.kmeans_redo,
                seeding=method.kmeans_seeding, alpha=method.alpha,
                temperature=method.temperature)
        for m, c in enumerate(method.num_clusters))

  clustered = jnp.asarray(step) >= warmup_steps(config)
  # A cond, not a where: k-means of the whole split is the pass's main cost.
  clusterings = jax.lax.cond(clustered, recluster,
                             lambda: method_state.clusterings)
  metrics = {"clustered": clustered.astype(jnp.float32)}
  for m, c in enumerate(clusterings):
    sizes = jax.ops.segment_sum(jnp.ones_like(c.labels), c.labels,
                                num_segments=c.prototypes.shape[0])
    metrics[f"concentration_mean_{m}"] = jnp.mean(c.concentration)
    metrics[f"concentration_std_{m}"] = jnp.std(c.concentration)
    metrics[f"empty_clusters_{m}"] = jnp.sum(sizes == 0).astype(jnp.float32)
  return params, method_state._replace(clusterings=clusterings), metrics


# ------------------------------------------------------------- M-step ---


def network(config):
  """Backbone and MoCo v2's Linear-ReLU-Linear head (PCL v2's `--mlp`)."""
  return moco_v2.network(config)


def init(config, rng, images):
  """MoCo's networks, EMA target and queue of `queue_size` keys, and
  placeholder clusterings (labels 0, zero prototypes, φ = τ) that the first
  `update` replaces; the ProtoNCE term ignores them during the warm-up."""
  check_config(config)
  method = config.method
  params, model_state, base = _shared.init(
      config, rng, images, network(config),
      target_parts=_shared.TARGET_PARTS, queue_size=method.queue_size,
      queue_width=method.proj_dim)
  clusterings = tuple(
      Clustering(jnp.zeros((config.dataset.train_size,), jnp.int32),
                 jnp.zeros((c, method.proj_dim), jnp.float32),
                 jnp.full((c,), method.temperature, jnp.float32))
      for c in method.num_clusters)
  return params, model_state, PCLState(base.target, base.queue, clusterings)


def _index(batch) -> jax.Array:
  if not (isinstance(batch, Mapping) and "index" in batch):
    raise ValueError(
        f"{_FN}.loss: the batch must be a dict carrying \"index\" (int32 "
        f"[B], each example's row of the train split) beside \"image\".")
  return batch["index"]


def loss(config, params, model_state, method_state: PCLState, batch, rng,
         step):
  """InfoNCE of the query (view 1) against its key (view 2) and the queue,
  plus from `warmup_steps(config)` on the ProtoNCE term of the query with
  the labels of rows `batch["index"]`; metrics "info_nce" and "proto_nce"
  (0 during the warm-up) are the two terms."""
  method = config.method
  model = network(config)
  images, _ = _shared.split_batch(batch)
  views = _shared.make_views(config, rng, images)
  if len(views) != 2:
    raise ValueError(
        f"{_FN}.loss: `config.method.augment.preset` must make 2 views "
        f"(query and key), got {len(views)}.")
  # As `builder.py`: only the query view goes through the online network
  # and only the key view through the momentum one.
  outputs, model_state = _shared.forward(model, params, model_state,
                                         views[:1])
  keys, target_state = _shared.target_forward(model, method_state.target,
                                              views[1:])
  query = outputs["projection"][0]
  key = _common.l2_normalize(keys["projection"][0])
  info_nce = contrastive.moco(query, key, method_state.queue.buffer,
                              temperature=method.temperature)
  index = _index(batch)
  clusterings = method_state.clusterings
  proto = clustering_losses.proto_nce(
      query, [c.prototypes for c in clusterings],
      [c.labels[index] for c in clusterings],
      [c.concentration for c in clusterings])
  # The placeholders give a finite proto term, so its zero gradient during
  # the warm-up is not NaN · 0.
  proto = jnp.where(step >= warmup_steps(config), proto, 0.0)
  run = _shared.Online(views, outputs, model_state, None)
  return info_nce + proto, _shared.momentum_output(
      config, step, run, target_state,
      metrics={"info_nce": info_nce, "proto_nce": proto},
      update={"queue": key})


def post_update(config, params, method_state: PCLState, update, step
                ) -> PCLState:
  """MoCo's EMA of the target and queue push; clusterings change only in
  `update`."""
  base = _shared.post_update(
      config, params, _shared.MethodState(method_state.target,
                                          method_state.queue),
      update, step)
  return method_state._replace(target=base.target, queue=base.queue)


METHOD = Method(name="pcl", init=init, loss=loss, post_update=post_update,
                encode=_shared.encode, default_config=default_config,
                dataset_update=DatasetUpdate(every=every,
                                             features=momentum_features,
                                             update=update))
