"""DeepCluster: k-means on the network's features gives the labels it learns.

Caron, Bojanowski, Joulin & Douze, "Deep Clustering for Unsupervised
Learning of Visual Features", ECCV 2018; the official code
(facebookresearch/deepcluster, `main.py`, `clustering.py`).

The network is a fixed Sobel layer (`_pseudo_labels.sobel`, the official
`--sobel`), a backbone f, an MLP head g (2 layers) and a linear classifier
W over k pseudo-classes. Every `reassign_every` steps (`DatasetUpdate`; one
epoch in the paper, `configs/deepcluster.py` writes `common.epochs(1)`) the
whole training set is clustered:

    x_n = g(f(image_n))           eval mode, un-augmented images, the MLP's
                                  output before its final ReLU (the official
                                  code drops that ReLU to extract features)
    x̃_n = normalize(PCA-whiten(x)_n)   to min(pca_dim, D) = 256 dims
    y_n = k-means(x̃; k)_n          Lloyd from k random rows, `kmeans_iters`
                                  iterations, empty clusters re-seeded by
                                  splitting a populated one (faiss)

and W is re-drawn (N(0, 0.01²), zero bias) with fresh optimizer state
(`DatasetUpdate.reset`). Between clusterings the network learns to predict
y on one augmented view v_b (random resized crop and flip) of each example,
found by the batch's "index":

    loss = 1/B Σ_b w_b · CE(W · ReLU(g(f(v_b))), y_b),
    w_n = N / (k' · |cluster(y_n)|)        (k' non-empty clusters)

The official code does not weight the loss; it samples the images of an
epoch uniformly over the clusters (`UnifLabelSampler`), against a collapse
into a few big clusters. The input pipeline here draws uniformly over the
examples, and the weights w (mean 1 over the dataset,
`_pseudo_labels.balance_weights`) make the expected loss equal to the one
under that sampler. The update logs the NMI between the new and the
previous clustering (the paper's NMI(t − 1, t)), the empty clusters, the
largest cluster's fraction and the k-means loss. `encode` is the backbone
behind the Sobel layer (the official evaluations keep it).

Defaults are the official ImageNet run (`main.sh`): k = 10,000, PCA to
256, a head of two 4096-wide layers (AlexNet's fc6-fc7; its linear layers,
like the classifier, drawn N(0, 0.01²) with zero biases), 20 k-means
iterations, Sobel, one clustering per epoch of 1,281,167 images in steps of
256. The optimizer is the configs' business (`configs/deepcluster.py`):
SGD over every parameter (learning rate 0.05, momentum 0.9, weight decay
1e-5), the classifier's own SGD without momentum (the official
`optimizer_tl`, re-created at every clustering: `optimizer.
momentum_free_parts`).

Where this differs from the official code (docs/fidelity.md#deepcluster): class-
balancing loss weights instead of the sampler, a BatchNorm MLP head on a
ResNet (AlexNet's has dropout), clustering features from the stored image
rather than a resize and centre crop.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.deepcluster(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                              proj_dim=8, num_clusters=2, num_examples=8)
  >>> images = jnp.zeros((8, 16, 16, 1), jnp.uint8)
  >>> params, model_state, labels = method.init(jax.random.key(0), images)
  >>> update = method.dataset_update
  >>> features = update.features(params, model_state, labels, images)
  >>> params, labels, metrics = update.update(
  ...     params, model_state, labels, features, jax.random.key(1), 0)
  >>> batch = {"image": images[:4], "index": jnp.arange(4)}
  >>> loss, out = method.loss(params, model_state, labels, batch,
  ...                         jax.random.key(2), 0)
  >>> print(features.shape, labels.labels.shape, loss.shape, update.reset)
  (8, 8) (1, 8) () ('classifier',)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from ssljax import models
from ssljax.losses import classification
from ssljax.methods import _pseudo_labels, _shared
from ssljax.methods.base import Method
from ssljax.state import kmeans

# Top-level key of the classifier in `params`, re-drawn at each clustering.
CLASSIFIER = "classifier"


def deepcluster(*, backbone: str | models.Model = "resnet50",
                backbone_kwargs: Mapping | None = None,
                augment: Mapping = _pseudo_labels.CROP_AND_FLIP,
                dtype: str = "float32", proj_hidden_dim: int = 4096,
                proj_dim: int = 4096, num_clusters: int = 10000,
                pca_dim: int = 256, kmeans_iters: int = 20,
                reassign_every: int = _pseudo_labels.IMAGENET_EPOCH_STEPS,
                num_examples: int = _pseudo_labels.IMAGENET_TRAIN_SIZE,
                sobel: bool = True) -> Method:
  """DeepCluster (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`.
    augment: the recipe whose first view each step trains on (default: a
      random resized crop and a flip).
    proj_hidden_dim, proj_dim: the MLP head, whose output is clustered.
    num_clusters: k.
    pca_dim: dimensions kept by the PCA-whitening before k-means.
    kmeans_iters: Lloyd iterations.
    reassign_every: steps between two clusterings (one epoch officially).
    num_examples: training examples N (rows of the per-example labels).
    sobel: put the fixed Sobel layer in front of the backbone (official).
  """
  fn = "deepcluster"
  setup, model = _pseudo_labels.kmeans_network(
      fn, backbone=backbone, backbone_kwargs=backbone_kwargs,
      augment=augment, dtype=dtype, sobel=sobel,
      proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
      num_clusters=num_clusters, num_examples=num_examples, pca_dim=pca_dim,
      kmeans_iters=kmeans_iters, reassign_every=reassign_every)

  def loss(params, model_state, labels, weights, batch, rng):
    views = _pseudo_labels.one_view(setup, rng, batch)
    outputs, model_state = _shared.forward(
        model, _pseudo_labels.network_params(params), model_state, views,
        joint=False)
    # [1, 1, B, K] logits of the [1, B, D] projections; labels [1, B].
    logits = _pseudo_labels.apply_heads(
        params[CLASSIFIER], jax.nn.relu(outputs["projection"]))
    value = classification.cross_entropy(logits, labels, weights)
    return value, _shared.step_output(
        _shared.Online(views, outputs, model_state),
        {"pseudo_label_accuracy": classification.accuracy(logits, labels)})

  def cluster(x, key):
    clusters = kmeans(x, num_clusters, iterations=kmeans_iters, key=key,
                      seeding="random")
    return clusters.assignments, {
        "kmeans_loss": clusters.inertia / x.shape[0]}

  return _pseudo_labels.kmeans_method(
      fn, setup, model, heads={CLASSIFIER: (1, num_clusters)},
      head_dim=proj_dim, head_std=_pseudo_labels.HEAD_INIT_STD,
      reset=(CLASSIFIER,), loss=loss, cluster=cluster,
      num_clusters=num_clusters, num_groups=1, pca_dim=pca_dim,
      num_examples=num_examples, every=reassign_every)
