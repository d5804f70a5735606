"""A small but real method, data source and config for the train tests.

Shared by tests/test_train*.py, tests/test_checkpoint*.py and the
multi-process worker script, so every test trains the same thing: a tiny
CNN (conv 3x3 -> BatchNorm -> ReLU -> mean pool -> linear projector) with a
SimCLR-style NT-Xent loss on two noisy views, an EMA of the parameters as
method state (updated in `post_update`, like a BYOL target), and a frozen
projector bias (via `Method.frozen`). Everything is plain jnp so these tests
do not depend on ssljax.models / ssljax.methods' plumbing; the factories are
built from configs as "_multihost_toy:toy" (a user's own method).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssljax.methods.base import DatasetUpdate, Method, StepOutput

CHANNELS = 8
BN_MOMENTUM = 0.9
BN_EPS = 1e-5


def init_params(rng, images, dim):
  k_conv, k_proj = jax.random.split(rng)
  in_channels = images.shape[-1]
  params = {
      "conv": {"kernel": 0.3 * jax.random.normal(
          k_conv, (3, 3, in_channels, CHANNELS)),
               "bias": jnp.zeros(CHANNELS)},
      "bn": {"scale": jnp.ones(CHANNELS), "bias": jnp.zeros(CHANNELS)},
      "proj": {"kernel": 0.3 * jax.random.normal(k_proj, (CHANNELS, dim)),
               "bias": jnp.full((dim,), 0.1)},
  }
  model_state = {"mean": jnp.zeros(CHANNELS), "var": jnp.ones(CHANNELS)}
  return params, model_state


def apply(params, model_state, x, *, train, dtype="float32"):
  """Tiny CNN; convolutions in `dtype`, BN statistics in f32."""
  dtype = jnp.dtype(dtype)
  h = jax.lax.conv_general_dilated(
      x.astype(dtype), params["conv"]["kernel"].astype(dtype), (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = h.astype(jnp.float32) + params["conv"]["bias"]
  if train:
    mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    model_state = jax.tree.map(
        lambda old, new: BN_MOMENTUM * old + (1 - BN_MOMENTUM) * new,
        model_state, {"mean": mean, "var": var})
  else:
    mean, var = model_state["mean"], model_state["var"]
  h = (h - mean) * jax.lax.rsqrt(var + BN_EPS)
  h = jax.nn.relu(h * params["bn"]["scale"] + params["bn"]["bias"])
  features = h.mean(axis=(1, 2))
  z = features @ params["proj"]["kernel"] + params["proj"]["bias"]
  return (features, z), model_state


def views(images, rng, noise):
  """Two views: the image and its horizontal flip, each plus Gaussian noise."""
  x = images.astype(jnp.float32) / 255.0
  k1, k2 = jax.random.split(rng)
  return (x + noise * jax.random.normal(k1, x.shape),
          x[:, :, ::-1] + noise * jax.random.normal(k2, x.shape))


def nt_xent(z1, z2, temperature):
  z = jnp.concatenate([z1, z2])
  z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
  n = z1.shape[0]
  logits = z @ z.T / temperature - 1e9 * jnp.eye(2 * n)
  positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_prob = jax.nn.log_softmax(logits)
  return -jnp.mean(log_prob[jnp.arange(2 * n), positives])


def frozen(params, step):
  """The projector's bias never moves."""
  del step
  mask = jax.tree.map(lambda _: jnp.zeros((), bool), params)
  mask["proj"]["bias"] = jnp.ones((), bool)
  return mask


def toy(*, temperature: float = 0.5, dim: int = 8, ema_momentum: float = 0.9,
        noise: float = 0.1, nan_from_step: int = -1, dtype: str = "float32"
        ) -> Method:
  """The toy method (see the module docstring); `nan_from_step` >= 0 makes
  the loss NaN from that step on."""

  def init(rng, batch):
    images = batch["image"] if isinstance(batch, dict) else batch
    params, model_state = init_params(rng, images, dim)
    return params, model_state, {"ema": jax.tree.map(jnp.copy, params)}

  def loss(params, model_state, method_state, batch, rng, step):
    del method_state
    images = batch["image"]
    v1, v2 = views(images, rng, noise)
    (features, z), model_state = apply(
        params, model_state, jnp.concatenate([v1, v2]), train=True,
        dtype=dtype)
    z1, z2 = jnp.split(z, 2)
    value = nt_xent(z1, z2, temperature)
    value = jnp.where((nan_from_step >= 0) & (step >= nan_from_step), jnp.nan,
                      value)
    metrics = {"rng_probe": jax.random.uniform(rng),
               "feature_std": features.std(axis=0).mean()}
    return value, StepOutput(model_state=model_state, metrics=metrics,
                             update=(), embeddings=features[:images.shape[0]])

  def post_update(params, method_state, update, step):
    del update, step
    return params, {"ema": jax.tree.map(
        lambda t, o: ema_momentum * t + (1 - ema_momentum) * o,
        method_state["ema"], params)}

  return Method(name="toy", init=init, loss=loss, post_update=post_update,
                encode=encode, frozen=frozen)


def encode(params, model_state, method_state, images):
  del method_state
  x = images.astype(jnp.float32) / 255.0
  (features, _), _ = apply(params, model_state, x, train=False)
  return features


TOY = toy()


def make_config(**overrides) -> ml_collections.ConfigDict:
  """A tiny experiment config; `overrides` are dotted keys, e.g.
  `make_config(**{"optimizer.name": "sgd"})`."""
  config = ml_collections.ConfigDict(dict(
      method=dict(name="_multihost_toy:toy", temperature=0.5, dim=8,
                  ema_momentum=0.9, noise=0.1, nan_from_step=-1,
                  dtype="float32"),
      dataset=dict(name="toy"), batch_size=16, total_steps=6,
      seed=0, mesh=dict(data=-1), compute_dtype="float32",
      optimizer=dict(name="lars", learning_rate=0.5, weight_decay=1e-4,
                     momentum=0.9, warmup_steps=2),
      checkpoint_every=3, max_to_keep=2, log_every=1))
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def toy_images(n=64, size=8, channels=1, seed=0):
  """Deterministic uint8 images [n, size, size, channels] and int labels."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  return images, (np.arange(n) % 10).astype(np.int32)


class ArrayIterator:
  """Global batch i is rows [i·B, (i+1)·B) mod n; yields this process's slice.

  Implements the data-iterator protocol the train loop needs: `next()` and
  `get_state()` / `set_state()` with a JSON-serialisable state.
  """

  def __init__(self, images, labels, *, global_batch, process_index=0,
               process_count=1):
    self._images, self._labels = images, labels
    self._global_batch = global_batch
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    self._position = 0

  def __iter__(self):
    return self

  def __next__(self):
    n = len(self._images)
    rows = (self._position * self._global_batch + self._offset
            + np.arange(self._local)) % n
    self._position += 1
    return {"image": self._images[rows], "label": self._labels[rows],
            "index": rows.astype(np.int32)}

  def get_state(self):
    return {"position": self._position}

  def set_state(self, state):
    self._position = state["position"]


# ------------------------------------------------------ with a dataset pass ---
# TOY plus a classifier head trained on per-example pseudo-labels that a
# dataset pass recomputes every EVERY steps, the shape of DeepCluster. Its
# features start with each image's mean pixel, so tests can check that the
# pass sees every example of mnist5k's train split once, in dataset order.

TRAIN_SIZE = 4000  # mnist5k's train split
CLUSTERS = 3
EVERY = 3


def cluster_toy(*, temperature: float = 0.5, dim: int = 8,
                ema_momentum: float = 0.9, noise: float = 0.1,
                nan_from_step: int = -1, dtype: str = "float32",
                every: int = EVERY) -> Method:
  """`toy` plus a classifier head on pseudo-labels of a dataset pass."""
  base = toy(temperature=temperature, dim=dim, ema_momentum=ema_momentum,
             noise=noise, nan_from_step=nan_from_step, dtype=dtype)

  def init(rng, images):
    params, model_state, method_state = base.init(rng, images)
    params["head"] = {"kernel": jnp.zeros((CHANNELS, CLUSTERS))}
    method_state.update(
        labels=jnp.zeros(TRAIN_SIZE, jnp.int32),
        pixel_means=jnp.zeros(TRAIN_SIZE),
        pass_steps=jnp.full(8, -1, jnp.int32),
        passes=jnp.zeros((), jnp.int32))
    return params, model_state, method_state

  def features(params, model_state, method_state, images):
    pixel_mean = images.astype(jnp.float32).mean(axis=(1, 2, 3)) / 255.0
    return jnp.concatenate(
        [pixel_mean[:, None], encode(params, model_state, method_state,
                                     images)], axis=1)

  def update(params, model_state, method_state, feats, rng, step):
    del model_state
    kernel = jax.random.normal(rng, (CHANNELS, CLUSTERS))
    labels = jnp.argmax(feats[:, 1:] @ kernel, axis=1).astype(jnp.int32)
    passes = method_state["passes"]
    method_state = {**method_state, "labels": labels,
                    "pixel_means": feats[:, 0],
                    "pass_steps": method_state["pass_steps"].at[passes].set(
                        step),
                    "passes": passes + 1}
    params = {**params, "head": {"kernel": 0.1 * kernel}}
    return params, method_state, {"passes": passes + 1}

  def loss(params, model_state, method_state, batch, rng, step):
    value, out = base.loss(params, model_state, method_state, batch, rng,
                           step)
    logits = out.embeddings @ params["head"]["kernel"]
    labels = method_state["labels"][batch["index"]]
    value += optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()
    present = jnp.zeros(10).at[batch["label"]].set(1.0)
    return value, out._replace(
        metrics={**out.metrics, "distinct_labels": present.sum()})

  def post_update(params, method_state, update_, step):
    network = {k: v for k, v in params.items() if k != "head"}
    _, ema = base.post_update(network, method_state, update_, step)
    return params, {**method_state, **ema}

  def frozen_(params, step):
    return {**frozen({k: v for k, v in params.items() if k != "head"}, step),
            "head": jax.tree.map(lambda _: jnp.zeros((), bool),
                                 params["head"])}

  return Method(
      name="cluster_toy", init=init, loss=loss, post_update=post_update,
      encode=encode, frozen=frozen_,
      dataset_update=DatasetUpdate(every=every, features=features,
                                   update=update, reset=("head",)))


CLUSTER_TOY = cluster_toy()


def mnist5k_train(data_dir):
  """mnist5k's whole train split (images, labels) in dataset order, also in
  each process of a multi-process run."""
  from ssljax import data  # pylint: disable=import-outside-toplevel
  (split,) = data.load("mnist5k", "train", batch_size=TRAIN_SIZE,
                       shuffle=False, num_epochs=1, data_dir=str(data_dir),
                       process_index=0, process_count=1)
  return split["image"], split["label"]


def cluster_config(data_dir, **overrides):
  """`make_config` for CLUSTER_TOY on mnist5k (built in `data_dir`)."""
  config = make_config(**{"batch_size": 64, "total_steps": 7, **overrides})
  config.method.name = "_multihost_toy:cluster_toy"
  config.dataset = dict(name="mnist5k", train_size=TRAIN_SIZE)
  config.data_dir = str(data_dir)
  return config
