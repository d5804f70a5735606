"""PCL: contrast instances and the prototypes of a k-means of the dataset.

Li, Zhou, Xiong & Hoi, "Prototypical Contrastive Learning of Unsupervised
Representations", ICLR 2021 (PCL v2: MoCo v2's MLP head and augmentation),
and the official salesforce/PCL `main_pcl.py` and `pcl/builder.py`.

PCL is expectation-maximisation on top of MoCo v2 (`methods.moco_v2`,
whose state and head it reuses). E-step, every `cluster_every` steps (one
epoch officially, `DatasetUpdate`): the momentum encoder embeds the whole
train split in eval mode, v'_i = normalize(g'(x_i)), and for each of M
granularities C_m (`num_clusters`, ImageNet: 25k, 50k, 100k) k-means gives
every example a cluster s_m(i), centroids c^m_j and a concentration per
cluster (Eq. 12 as the official code estimates it, see
`ssljax.losses.pcl_concentration`):

    φ^m_j = (Σ_{i∈j} ||v'_i − c^m_j|| / Z_j) / log(Z_j + α),  α = 10,

then clamped to its 10th-90th percentiles and rescaled to mean τ = 0.2.
The prototypes are the normalised centroids ĉ^m_j. M-step, every train step,
with q = normalize(g(view 1)) the query and k = normalize(g'(view 2)) the key
of example b (`batch["index"]` gives its row i in the dataset):

    loss = InfoNCE(q, k, queue; τ)
           + [clustered] · 1/M Σ_m −log(exp(q·ĉ^m_s / φ^m_s)
                                       / Σ_j exp(q·ĉ^m_j / φ^m_j)),

s = s_m(i), i.e. `ssljax.losses.moco` plus `ssljax.losses.proto_nce`
(Eq. 11, ProtoNCE). The dataset passes before `warmup_steps` (the official
20 epochs of 200) skip k-means; the prototype term is on from the first
clustering (`PCLState.clustered`), as the official code's epochs >= the
warm-up, which start with one. The keys are enqueued FIFO after the step;
the momentum encoder is the EMA θ' ← m·θ' + (1 − m)·θ (m = 0.999). Query
and key each go through their network in their own call (BatchNorm per
view, as the official code's two encoders).

Followed from the official code rather than the paper: the concentration's
clamping and rescaling (the paper gives only Eq. 12); faiss k-means as
`run_kmeans` configures it, Euclidean on the normalised embeddings, centroids
initialised with k random rows (`seeding="random"`), 20 iterations, the best
of `kmeans_redo` = 5 runs by inertia, empty clusters re-seeded by splitting,
distances for φ measured to the raw centroids, which are normalised only
afterwards; one InfoNCE direction (query of view 1, key of view 2, as
`builder.py`) and one temperature τ for InfoNCE and the concentrations'
mean. The optimizer (SGD over every parameter, learning rate 0.03, weight
decay 1e-4, cosine) is in `configs/pcl.py`.

Not followed, and why (docs/fidelity.md#pcl):
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
  * BatchNorm statistics are global over the batch by default; the
    official per-GPU statistics with the keys' shuffling BatchNorm are
    `bn_groups` (as `methods.moco_v2`; the ImageNet config sets 8).
  * The official embeddings for clustering come from a resize-and-center-
    crop of each image; here from the image as the input pipeline stores it
    (normalised, no crop), like `encode`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.pcl(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                      proj_dim=8, queue_size=16, num_clusters=(2, 3),
  ...                      num_examples=8)
  >>> images = jnp.zeros((4, 16, 16, 1), jnp.uint8)
  >>> _, _, state = method.init(jax.random.key(0), images)
  >>> print([c.prototypes.shape for c in state.clusterings],
  ...       bool(state.clustered))
  [(2, 8), (3, 8)] False
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from ssljax import _common, losses, models
from ssljax.methods import _pseudo_labels, _registry, _shared
from ssljax.methods.moco_v2 import MoCoState, grouped, moco_head, moco_v2
from ssljax.methods.base import DatasetUpdate, Method, Schedule
from ssljax.state import KMEANS_SEEDINGS, kmeans

# PCL v2's views are MoCo v2's (`--aug-plus`).
MOCO_V2_AUGMENT = _registry.parameters(moco_v2)["augment"].default


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
  """PCL's `method_state`.

  Attributes:
    moco: MoCo's momentum encoder and queue of keys.
    clusterings: one `Clustering` per entry of `num_clusters`.
    clustered: bool scalar, True once a clustering replaced the
      placeholders (the ProtoNCE term is on).
  """
  moco: MoCoState
  clusterings: tuple[Clustering, ...]
  clustered: jax.Array


def check_num_clusters(num_clusters, num_examples: int, fn: str) -> None:
  """A non-empty tuple of ints in [1, num_examples); else ValueError."""
  # C < N leaves some cluster two members, which the concentration needs.
  if not (isinstance(num_clusters, Sequence) and num_clusters and all(
      isinstance(c, numbers.Integral) and not isinstance(c, bool)
      and 1 <= c < num_examples for c in num_clusters)):
    raise ValueError(
        f"{fn}: `num_clusters` must be a non-empty tuple of ints in [1, "
        f"num_examples) = [1, {num_examples}), got {num_clusters!r}.")


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
  run = functools.partial(kmeans, features, num_clusters,
                          iterations=iterations, seeding=seeding)
  # One run at a time: N × D rows are shared, but each run's distances and
  # assignments would be held `redo` times under a vmap.
  runs = jax.lax.map(lambda k: run(key=k), jax.random.split(key, redo))
  best = jax.tree.map(lambda x: x[jnp.argmin(runs.inertia)], runs)
  concentration = losses.pcl_concentration(
      features, best.assignments, best.centroids, alpha=alpha,
      temperature=temperature)
  return Clustering(best.assignments, _common.l2_normalize(best.centroids),
                    concentration)


def pcl(*, backbone: str | models.Model = "resnet50",
        backbone_kwargs: Mapping | None = None,
        augment: Mapping = MOCO_V2_AUGMENT, dtype: str = "float32",
        proj_hidden_dim: int = 2048, proj_dim: int = 128,
        temperature: float = 0.2, queue_size: int = 16384,
        momentum: Schedule = 0.999,
        num_clusters: tuple[int, ...] = (25000, 50000, 100000),
        warmup_steps: int = 20 * _pseudo_labels.IMAGENET_EPOCH_STEPS,
        cluster_every: int = _pseudo_labels.IMAGENET_EPOCH_STEPS,
        alpha: float = 10.0, kmeans_iterations: int = 20,
        kmeans_redo: int = 5, kmeans_seeding: str = "random",
        num_examples: int = _pseudo_labels.IMAGENET_TRAIN_SIZE,
        bn_groups: int = 1) -> Method:
  """PCL (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`.
    augment: the views' recipe; its first view is the query, its second
      the key.
    proj_hidden_dim, proj_dim: MoCo v2's Linear-ReLU-Linear head.
    temperature: τ of InfoNCE and the concentrations' mean.
    queue_size: r, the number of queued negatives.
    momentum: the key encoder's EMA momentum m(step).
    num_clusters: C_m of each clustering, each < num_examples.
    warmup_steps: the dataset passes before this step skip k-means.
    cluster_every: steps between two dataset passes (one epoch).
    alpha: smoothing α of the concentration.
    kmeans_iterations, kmeans_redo, kmeans_seeding: of each clustering
      (`cluster`).
    num_examples: training examples N (rows of the per-example labels).
    bn_groups: BatchNorm statistics over this many slices of each view, the
      keys' after shuffling (the official per-GPU shuffling BatchNorm, as
      `methods.moco_v2`); 1: global.
  """
  fn = "pcl"
  _common.check_count(num_examples, "num_examples", fn, minimum=1)
  check_num_clusters(num_clusters, num_examples, fn)
  _common.check_count(warmup_steps, "warmup_steps", fn)
  _common.check_count(cluster_every, "cluster_every", fn, minimum=1)
  _common.check_count(kmeans_iterations, "kmeans_iterations", fn, minimum=1)
  _common.check_count(kmeans_redo, "kmeans_redo", fn, minimum=1)
  if kmeans_seeding not in KMEANS_SEEDINGS:
    raise ValueError(f"{fn}: `kmeans_seeding` must be one of "
                     f"{KMEANS_SEEDINGS}, got {kmeans_seeding!r}.")
  _common.check_non_negative(alpha, "alpha", fn)
  _common.check_positive(temperature, "temperature", fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  if len(setup.views.specs(32)) < 2:
    raise ValueError(f"{fn}: `augment` must make 2 views (query and key), "
                     f"got preset {augment['preset']!r}.")
  model = models.compose(setup.backbone, projector=moco_head(
      proj_hidden_dim, proj_dim, setup.kw))
  # MoCo v2's state, its initialisation and its advance after each step.
  moco = moco_v2(
      backbone=setup.backbone, augment=augment, dtype=dtype,
      proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
      temperature=temperature, queue_size=queue_size, momentum=momentum,
      bn_groups=bn_groups)
  recluster = functools.partial(
      cluster, iterations=kmeans_iterations, redo=kmeans_redo,
      seeding=kmeans_seeding, alpha=alpha, temperature=temperature)

  def init(rng, batch):
    """MoCo's networks, target and queue, and placeholder clusterings
    (labels 0, zero prototypes, φ = τ) that the first clustering
    replaces."""
    params, model_state, moco_state = moco.init(rng, batch)
    clusterings = tuple(
        Clustering(jnp.zeros((num_examples,), jnp.int32),
                   jnp.zeros((c, proj_dim), jnp.float32),
                   jnp.full((c,), temperature, jnp.float32))
        for c in num_clusters)
    return params, model_state, PCLState(moco_state, clusterings,
                                         jnp.zeros((), bool))

  def loss(params, model_state, method_state, batch, rng, step):
    """InfoNCE of the query (view 1) against its key (view 2) and the
    queue, plus once clustered the ProtoNCE term of the query with the
    labels of rows `batch["index"]`; metrics "info_nce" and "proto_nce"
    (0 before the first clustering) are the two terms."""
    index = _shared.index_of(batch, "pcl.loss")
    shuffle = None
    if bn_groups > 1:
      rng, shuffle = jax.random.split(rng)
    views = setup.views.make(rng, batch, count=2)
    # As `builder.py`: only the query view goes through the online network
    # and only the key view through the momentum one.
    queries, model_state = _shared.forward(
        grouped(model, bn_groups), params, model_state, views[:1],
        joint=False)
    keys, target_state = _shared.target_forward(
        grouped(model, bn_groups, shuffle), method_state.moco.target,
        views[1:], joint=False)
    query = queries["projection"][0]
    key = _common.l2_normalize(keys["projection"][0])
    info_nce = losses.moco(query, key, method_state.moco.queue.buffer,
                           temperature=temperature)
    clusterings = method_state.clusterings
    proto = losses.proto_nce(
        query, [c.prototypes for c in clusterings],
        [c.labels[index] for c in clusterings],
        [c.concentration for c in clusterings])
    # The placeholders give a finite term, so its zero gradient before the
    # first clustering is not NaN · 0.
    proto = jnp.where(method_state.clustered, proto, 0.0)
    return info_nce + proto, _shared.step_output(
        _shared.Online(views, queries, model_state),
        {"info_nce": info_nce, "proto_nce": proto,
         "momentum": _shared.at(momentum, step)},
        (target_state, key))

  def post_update(params, method_state, update, step):
    """MoCo's EMA of the target and queue push; the clusterings change only
    in the dataset passes."""
    params, moco_state = moco.post_update(params, method_state.moco, update,
                                          step)
    return params, method_state._replace(moco=moco_state)

  def momentum_features(params, model_state, method_state, images):
    """[B, proj_dim] float32 l2-normalised embeddings of the momentum
    encoder (eval mode) of the normalised, un-augmented images."""
    del params, model_state  # The official code clusters momentum features.
    target = method_state.moco.target
    out, _ = model.apply(target.params, target.model_state,
                         setup.views.normalize(_shared.first_image(images)),
                         train=False)
    return _common.l2_normalize(
        _common.to_compute(out["projection"])).astype(jnp.float32)

  def update(params, model_state, method_state, features, rng, step):
    """PCL's E-step over the train split's [N, proj_dim] `features`.

    From `warmup_steps` on, clustering m becomes `cluster(features,
    num_clusters[m], key=fold_in(rng, m), ...)`; before, k-means is skipped
    and the clusterings stay as they are. Metrics: "clustered" (1 when
    k-means ran) and, per clustering m, "concentration_mean_m" (τ by
    construction once clustered), "concentration_std_m" and
    "empty_clusters_m"."""
    del model_state
    shape = (num_examples, proj_dim)
    if jnp.shape(features) != shape:
      raise ValueError(
          f"pcl.update: `features` must have shape [num_examples, proj_dim] "
          f"= {list(shape)}, got {jnp.shape(features)}.")
    features = jnp.asarray(features, jnp.float32)
    clustered = jnp.asarray(step) >= warmup_steps
    # A cond, not a where: k-means of the whole split is the pass's cost.
    clusterings = jax.lax.cond(
        clustered,
        lambda: tuple(recluster(features, c, key=jax.random.fold_in(rng, m))
                      for m, c in enumerate(num_clusters)),
        lambda: method_state.clusterings)
    metrics = {"clustered": clustered.astype(jnp.float32)}
    for m, c in enumerate(clusterings):
      sizes = jax.ops.segment_sum(jnp.ones_like(c.labels), c.labels,
                                  num_segments=c.prototypes.shape[0])
      metrics[f"concentration_mean_{m}"] = jnp.mean(c.concentration)
      metrics[f"concentration_std_{m}"] = jnp.std(c.concentration)
      metrics[f"empty_clusters_{m}"] = jnp.sum(sizes == 0).astype(
          jnp.float32)
    return params, PCLState(method_state.moco, clusterings,
                            method_state.clustered | clustered), metrics

  return Method(name=fn, init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(setup), crops=setup.views.specs,
                dataset_update=DatasetUpdate(
                    every=cluster_every, features=momentum_features,
                    update=update))
