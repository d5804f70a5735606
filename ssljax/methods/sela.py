"""SeLa: self-labelling by equipartitioned optimal transport.

Asano, Rupprecht & Vedaldi, "Self-labelling via simultaneous clustering and
representation learning", ICLR 2020.

A backbone f and H linear heads, each over K clusters, are trained with the
cross-entropy against labels y^h that are themselves chosen to minimise it,
subject to an equal share N/K of the N training examples per cluster.
With P^h_nk = softmax(W_h f(x_n) + b_h)_k on the whole training set,
the relaxed labelling is the transport plan

    Q^h = diag(α) (P^h)^λ diag(β),   Q^h 1 = 1/N,   (Q^h)ᵀ 1 = 1/K,

found by Sinkhorn-Knopp (`ssljax.state.sinkhorn` on the log-probabilities
with ε = 1/λ, λ = 25), and y^h_n = argmax_k Q^h_nk (`sinkhorn_labels`);
the heads are labelled independently. Between two labellings (every
`reassign_epochs` epochs, `DatasetUpdate`) the loss is

    loss = 1/(H·V·B) Σ_h Σ_v Σ_b CE(W_h f(v_b) + b_h, y^h_b),

v the augmented views of each example, whose labels the batch's "index"
finds. The label update logs the entropy of the label distribution and the
fraction of clusters in use (log K and 1 when equipartitioned), and the
NMI with the previous labels. `encode` is the backbone in eval mode.

Defaults are the paper's best ResNet-50 run, SeLa [3k × 10]: K = 3000,
H = 10 heads, λ = 25, 400 epochs with 100 label updates (one every 4
epochs), SGD with learning rate 0.05, weight decay 1e-5, and SeLa's
augmentation (random resized crop, colour jitter 0.4, grayscale 0.2, flip).

The heads start as PyTorch's `nn.Linear` default, U(±1/√D), which SeLa's
ResNet keeps. The scale matters: λ·log P sets how sharp the plan is, and
the arg-max of a plan that is nearly uniform (heads of N(0, 0.01²) on
small features) neither balances the clusters nor follows the network,
which then learns labels that are close to noise.

Differences from the paper:
* labels are updated every `reassign_epochs` epochs; the official code
  spaces its `nopts` updates quadratically in time (more at the start), a
  schedule its authors say can just as well be linear;
* Sinkhorn-Knopp runs `sinkhorn_iters` iterations in float32 in the log
  domain, where the official code iterates in float64 until the row
  scalings change by less than 0.1 in total; the update holds one head's
  N × K plan at a time on each device (15 GB for ImageNet's 1.28M × 3000),
  which the official code spreads over several GPUs;
* the labelled outputs are those of the eval-mode network on the
  un-augmented images (the training loop's `features` pass); the official
  code computes them in train mode on augmented images;
* all labels start at 0 (the loop labels before step 0, as the official
  code optimises the labels at iteration 0) instead of a random
  equipartition;
* each step sees the V views of `config.method.augment` (two) of every
  example; the paper draws one per image.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import sela
  >>> method = sela.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, batch_size=4, dataset=dict(train_size=8),
  ...     method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", num_clusters=4, num_heads=2)
  >>> images = jax.random.randint(jax.random.key(3), (8, 16, 16, 1), 0, 256,
  ...                             jnp.uint8)
  >>> params, model_state, labels = method.init(config, jax.random.key(0),
  ...                                           images)
  >>> update = method.dataset_update
  >>> features = update.features(config, params, model_state, labels, images)
  >>> params, labels, metrics = update.update(
  ...     config, params, model_state, labels, features, jax.random.key(1), 0)
  >>> print(labels.labels.shape, float(metrics["clusters_used_fraction"]))
  (2, 8) 1.0
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import _common, models
from ssljax.methods import _pretext, _pseudo_labels, _shared
from ssljax.methods.base import DatasetUpdate, Method
from ssljax.state import sinkhorn

HEADS = "heads"


def default_config() -> ml_collections.ConfigDict:
  """SeLa's hyper-parameters (SeLa [3k × 10], ResNet-50)."""
  return ml_collections.ConfigDict(dict(
      name="sela", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config(
          "byol", jitter_prob=1.0, brightness=0.4, contrast=0.4,
          saturation=0.4, hue=0.4, grayscale_prob=0.2, blur_prob=0.0,
          solarize_prob=0.0),
      num_clusters=3000, num_heads=10, lambda_=25.0, sinkhorn_iters=100,
      reassign_epochs=4.0))


def _check(config, fn: str) -> None:
  _pseudo_labels.check_config(config, fn,
                              counts={"num_heads": 1, "sinkhorn_iters": 1},
                              positive=("reassign_epochs", "lambda_"))


def network(config) -> models.Model:
  """The backbone alone; the heads are kept as arrays under "heads"."""
  return models.compose(_shared.backbone(config))


def sinkhorn_labels(logits: jax.Array, *, lambda_: float,
                    iterations: int) -> jax.Array:
  r"""SeLa's labels: argmax_k of Q ∝ softmax(logits)^λ with equal clusters.

  Sinkhorn-Knopp (`ssljax.state.sinkhorn`) on log P = log_softmax(logits)
  with ε = 1/λ rescales P^λ = exp(log P / ε) alternately so that every
  cluster holds N/K of the mass and every example 1; the label of example n
  is the arg-max of its row (the final row scaling does not change it).

  Args:
    logits: [N, K] head outputs of the whole training set.
    lambda_: λ > 0; larger follows the network's predictions more closely.
    iterations: Sinkhorn-Knopp iterations.

  Returns:
    int32 [N] labels, each cluster holding about N/K examples.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[2., 0.], [1., 0.], [0.5, 0.], [0., 1.]])
    >>> # all prefer cluster 0 but the least sure of them moves to 1
    >>> print(sinkhorn_labels(logits, lambda_=25.0, iterations=50).tolist())
    [0, 0, 1, 1]
  """
  fn = "sinkhorn_labels"
  _common.check_rank(logits, 2, "logits", fn)
  _common.check_positive(lambda_, "lambda_", fn)
  log_p = jax.nn.log_softmax(_common.to_compute(logits), axis=-1)
  codes = sinkhorn(log_p, epsilon=1.0 / lambda_, iterations=iterations)
  return jnp.argmax(codes, axis=1).astype(jnp.int32)


def init(config, rng, images):
  _check(config, "sela.init")
  method = config.method
  net_rng, head_rng = jax.random.split(rng)
  params, model_state, _ = _shared.init(config, net_rng, images,
                                        network(config))
  features = jax.eval_shape(
      lambda: _shared.encode(config, params, model_state, images))
  params[HEADS] = _pseudo_labels.init_heads(
      head_rng, num_heads=method.num_heads, in_dim=features.shape[-1],
      num_classes=method.num_clusters, std=None)
  return params, model_state, _pseudo_labels.init_state(
      config, method.num_heads, weighted=False)


def loss(config, params, model_state, method_state, batch, rng, step):
  del step  # The targets change only at the label updates.
  labels, _ = _pseudo_labels.batch_labels(method_state, batch, "sela.loss")
  run = _shared.online(config, network(config),
                       {"backbone": params["backbone"]}, model_state, batch,
                       rng)
  # [H, V, B, K] from the [V, B, D] features.
  logits = _pseudo_labels.apply_heads(params[HEADS], run.outputs["features"])
  labels = labels[:, None, :]  # Every view of an example has its labels.
  return _pseudo_labels.cross_entropy(logits, labels), _shared.step_output(
      run, metrics={"pseudo_label_accuracy": _pseudo_labels.accuracy(
          logits, labels)})


def eval_features(config, params, model_state, method_state, images):
  """`DatasetUpdate.features`: backbone features [B, D] in eval mode of the
  un-augmented images (`_shared.encode`), float32."""
  del method_state  # The features do not depend on the labels.
  return _shared.encode(config, params, model_state,
                        images).astype(jnp.float32)


def update(config, params, model_state, method_state, features, rng, step):
  """`DatasetUpdate.update`: every head's `sinkhorn_labels` of its outputs
  on the whole training set; logs the label entropy, the clusters in use
  and the NMI with the previous labels (mean over heads)."""
  del model_state, rng, step  # The labels are a function of the outputs.
  fn = "sela.update"
  _check(config, fn)
  _pseudo_labels.check_features(config, features, fn)
  method = config.method
  label = functools.partial(sinkhorn_labels, lambda_=method.lambda_,
                            iterations=method.sinkhorn_iters)
  heads = params[HEADS]
  # One head at a time: its [N, K] plan is the update's largest array.
  labels = jax.lax.map(
      lambda head: label(_pseudo_labels.apply_heads(
          jax.tree.map(lambda a: a[None], head), features)[0]),
      heads)
  metrics = _pseudo_labels.cluster_statistics(labels, method.num_clusters)
  metrics["nmi_previous"] = jnp.mean(jax.vmap(
      _pseudo_labels.normalized_mutual_information)(labels,
                                                    method_state.labels))
  return params, _pseudo_labels.PseudoLabels(labels), metrics


METHOD = Method(
    name="sela", init=init, loss=loss, post_update=_pretext.keep_state,
    encode=_shared.encode, default_config=default_config,
    dataset_update=DatasetUpdate(every=_pseudo_labels.every,
                                 features=eval_features, update=update))
