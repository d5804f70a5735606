"""DeepCluster: k-means on the network's features gives the labels it learns.

Caron, Bojanowski, Joulin & Douze, "Deep Clustering for Unsupervised
Learning of Visual Features", ECCV 2018.

The network is a backbone f, an MLP head g (2 layers) and a linear
classifier W over k pseudo-classes. Every `reassign_epochs` epochs
(`DatasetUpdate`, every epoch in the paper), the whole training set is
clustered:

    x_n = g(f(image_n))           eval mode, un-augmented images, the MLP's
                                  output before its final ReLU (the official
                                  code's features: it drops that ReLU
                                  while extracting them)
    x̃_n = normalize(PCA-whiten(x)_n)   to min(pca_dim, D) = 256 dims
    y_n = k-means(x̃; k)_n          Lloyd from k random rows, `kmeans_iters`
                                  iterations, empty clusters re-seeded by
                                  splitting a populated one (faiss)

and W is re-drawn (N(0, 0.01²), zero bias) with fresh optimizer state
(`DatasetUpdate.reset`). Between clusterings the network learns to predict
y on augmented views v of each example, found by the batch's "index":

    loss = 1/(V·B) Σ_v Σ_b w_b · CE(W · ReLU(g(f(v_b))), y_b),
    w_n = N / (k' · |cluster(y_n)|)        (k' non-empty clusters)

The official code does not weight the loss; it samples the images of an
epoch uniformly over the clusters (`UnifLabelSampler`), against the
collapse into a few big clusters. The input pipeline here draws uniformly
over the examples, and the weights w (mean 1 over the dataset,
`_pseudo_labels.balance_weights`) make the expected loss equal to the one
under that sampler. The update logs the NMI between the new and the
previous clustering (the paper's measure of the clusters' stability,
NMI(t − 1, t)), the empty clusters and the largest cluster's fraction.
`encode` is the backbone (transfer features).

Defaults are the paper's ImageNet run: k = 10,000 (10× the classes),
PCA to 256, a head of two 4096-wide layers (AlexNet's fc6-fc7), 20 k-means
iterations, one clustering per epoch, SGD with learning rate 0.05, momentum
0.9, weight decay 1e-5 (in `configs/deepcluster.py`).

Differences from the paper:
* no Sobel filtering of the input (the paper feeds AlexNet/VGG gradients
  of the grey image); the backbones here take the image itself;
* the MLP head has BatchNorm (`ssljax.models.projector`) where AlexNet's
  has dropout, and it sits on a ResNet or small CNN rather than on
  AlexNet's conv5;
* each step sees the V augmented views of `config.method.augment` (a crop
  and a flip, two views) of every example; the paper draws one per image;
* the classifier's fresh optimizer state comes from the training loop
  zeroing it (`reset`), as the paper's new top-layer optimizer each epoch.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import deepcluster
  >>> method = deepcluster.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, batch_size=4, dataset=dict(train_size=8),
  ...     method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                      proj_dim=8, num_clusters=2)
  >>> images = jnp.zeros((8, 16, 16, 1), jnp.uint8)
  >>> params, model_state, labels = method.init(config, jax.random.key(0),
  ...                                           images)
  >>> update = method.dataset_update
  >>> features = update.features(config, params, model_state, labels, images)
  >>> params, labels, metrics = update.update(
  ...     config, params, model_state, labels, features, jax.random.key(1), 0)
  >>> batch = {"image": images[:4], "index": jnp.arange(4)}
  >>> loss, out = method.loss(config, params, model_state, labels, batch,
  ...                         jax.random.key(2), 0)
  >>> print(features.shape, labels.labels.shape, loss.shape, update.reset)
  (8, 8) (1, 8) () ('classifier',)
"""

from __future__ import annotations

import jax
import ml_collections

from ssljax.methods import _pretext, _pseudo_labels, _shared
from ssljax.methods.base import DatasetUpdate, Method
from ssljax.state import kmeans

# Top-level key of the classifier in `params`, re-drawn at each clustering.
CLASSIFIER = "classifier"


def default_config() -> ml_collections.ConfigDict:
  """DeepCluster's hyper-parameters (the paper's ImageNet run)."""
  return ml_collections.ConfigDict(dict(
      name="deepcluster", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), proj_hidden_dim=4096, proj_dim=4096,
      num_clusters=10000, pca_dim=256, kmeans_iters=20, reassign_epochs=1.0))


def _check(config, fn: str) -> None:
  _pseudo_labels.check_config(config, fn, counts={"pca_dim": 1,
                                                  "kmeans_iters": 0})


def init(config, rng, images):
  _check(config, "deepcluster.init")
  net_rng, head_rng = jax.random.split(rng)
  params, model_state, _ = _shared.init(config, net_rng, images,
                                        _pseudo_labels.mlp_network(config))
  params[CLASSIFIER] = _pseudo_labels.init_heads(
      head_rng, num_heads=1, in_dim=config.method.proj_dim,
      num_classes=config.method.num_clusters)
  return params, model_state, _pseudo_labels.init_state(config, 1,
                                                        weighted=True)


def loss(config, params, model_state, method_state, batch, rng, step):
  del step  # The targets change only at the clusterings.
  labels, weights = _pseudo_labels.batch_labels(method_state, batch,
                                                "deepcluster.loss")
  run = _shared.online(config, _pseudo_labels.mlp_network(config),
                       _pseudo_labels.network_params(params), model_state,
                       batch, rng)
  # [1, V, B, K] from the [V, B, D] projections; the labels [1, B] and
  # weights [B] are every view's.
  logits = _pseudo_labels.apply_heads(params[CLASSIFIER],
                                      jax.nn.relu(run.outputs["projection"]))
  value = _pseudo_labels.cross_entropy(logits, labels, weights)
  return value, _shared.step_output(run, metrics={
      "pseudo_label_accuracy": _pseudo_labels.accuracy(logits, labels)})


def update(config, params, model_state, method_state, features, rng, step):
  """`DatasetUpdate.update`: k-means of the whitened features, new labels
  and weights, a fresh classifier; logs NMI and cluster sizes."""
  del model_state, step  # The clustering sees only the features.
  fn = "deepcluster.update"
  _check(config, fn)
  _pseudo_labels.check_features(config, features, fn)
  method = config.method
  kmeans_rng, head_rng = jax.random.split(rng)
  clusters = kmeans(
      _pseudo_labels.preprocess_features(features, method.pca_dim),
      method.num_clusters, iterations=method.kmeans_iters, key=kmeans_rng,
      seeding="random")
  params, method_state, metrics = _pseudo_labels.relabel(
      params, method_state, clusters.assignments, method.num_clusters,
      head_rng, heads=(CLASSIFIER,),
      head_std=_pseudo_labels.HEAD_INIT_STD)
  metrics["kmeans_loss"] = clusters.inertia / features.shape[0]
  return params, method_state, metrics


METHOD = Method(
    name="deepcluster", init=init, loss=loss,
    post_update=_pretext.keep_state, encode=_shared.encode,
    default_config=default_config,
    dataset_update=DatasetUpdate(
        every=_pseudo_labels.every,
        features=_pseudo_labels.projection_features, update=update,
        reset=(CLASSIFIER,)))
