"""Evaluation of a run's frozen encoder: kNN, linear probe, collapse monitors.

`evaluate` encodes the train and test splits of `config.dataset.name` with
`method.encode` (eval mode, no augmentation: the images are only normalised)
and scores the features with `ssljax.evaluate`:

  knn_top1       weighted kNN, k = 20, T = 0.07: the monitor of Wu et al.
                 (CVPR 2018) with DINO's `eval_knn.py` settings (Caron et al.,
                 ICCV 2021).
  knn1_top1      plain 1-nearest neighbour (cosine), the classifier of the
                 raw-pixel baselines that tables quote next to kNN numbers.
  embedding_std  std of the l2-normalised test features per dimension,
                 ~1/sqrt(D) when healthy, 0 at collapse (Chen & He, SimSiam).
  rankme         effective rank of the test features (Garrido et al. 2023).
  probe_top1     test accuracy of the fast probe, a logistic regression
                 trained on the frozen, standardised features of the
                 un-augmented train images (`linear_probe`, 100 epochs),
                 when asked for: it costs more than the rest together. It
                 is a monitor, not the standard linear evaluation
                 (`linear_top1` of `experiments/linear_eval.py`, trained on
                 augmented views; docs/evaluation.md).
  knn_top1_10pct, probe_top1_10pct, knn_top1_1pct, probe_top1_1pct
                 kNN and probe trained on 10% and 1% of the train labels,
                 fixed stratified subsets (`few_label_scores`), with the
                 probe.

`evaluation_hook` runs it inside `train(...)` every `config.eval_every` steps
(default: at every checkpoint) and at the last step, with the probe and the
few-label scores at the last step only.

Encoding is data parallel like training: each process loads its slice of
every global batch, the jitted encoder sees the global batch sharded over the
("data",) mesh, and its output is replicated, so every process ends with all
features and computes the same scores; only process 0 writes them. All
features of both splits are held on every device and host, which suits the
small evaluation sets this monitor is for (MNIST-5k, CIFAR: 60,000 x 512
floats); for ImageNet-scale runs set `eval_every` to 0 (end of run only) or
evaluate offline with `experiments/linear_eval.py`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from ssljax import data as data_lib
from ssljax import evaluate
from ssljax import methods
from ssljax.train.sharding import data_sharded, make_mesh, replicated
from ssljax.train.state import TrainState

# DINO's kNN monitor (eval_knn.py defaults: k = 20, T = 0.07).
KNN_K = 20
KNN_TEMPERATURE = 0.07


class Features(NamedTuple):
  """Frozen features of a dataset's two splits (host numpy arrays).

  Attributes:
    train: [N_train, D] float32.
    train_labels: [N_train] int32.
    test: [N_test, D] float32.
    test_labels: [N_test] int32.
  """
  train: np.ndarray
  train_labels: np.ndarray
  test: np.ndarray
  test_labels: np.ndarray


def dataset_options(config) -> dict:
  """The `ssljax.data.info`/`load` keywords a config sets beside the name:
  `data_dir`, and the folder `path` and view side of variable-size data."""
  dataset = config.dataset
  return dict(data_dir=config.get("data_dir"), path=dataset.get("path"),
              image_size=dataset.get("image_size"))


def dataset_info(config) -> data_lib.DatasetInfo:
  """`ssljax.data.info` of the config's dataset."""
  options = dataset_options(config)
  return data_lib.info(config.dataset.name, path=options["path"],
                       image_size=options["image_size"])


def make_encoder(encode: Callable, mesh) -> Callable:
  """`encoder(tree, images, ids) -> ([B, D], ids)`, jitted over `mesh`.

  `encode(tree, images) -> [B, D]` computes the features of uint8 images from
  the arrays of `tree` (e.g. `(params, model_state)`), which are replicated;
  images and `ids` (any per-example int arrays: labels, indices) are split
  over the "data" axis of `mesh` as in the train step. Features and ids come
  back replicated so that every process can read all of them.
  """
  return jax.jit(
      lambda tree, images, ids: (encode(tree, images), ids),
      in_shardings=(replicated(mesh), data_sharded(mesh), data_sharded(mesh)),
      out_shardings=replicated(mesh))


def method_encoder(method, mesh) -> Callable:
  """`make_encoder` of `method.encode`, tree = (params, model_state,
  method_state)."""
  return make_encoder(lambda tree, images: method.encode(*tree, images), mesh)


def encode_split(config, encoder: Callable, tree, split: str, *, mesh
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Features and labels of every example of `split`, in dataset order.

  Batches of `config.batch_size`, unshuffled, read once; rows are put in
  dataset order by the batches' `index` (with several processes the global
  batches interleave the processes' shares). The last global batch is padded
  with zero images (and every process pads its slice to the same size,
  feeding an all-padding slice when its share ran out), since the encoder
  needs one shape on every process; padded rows are dropped.

  Args:
    config: the run's config (`dataset.name`, `batch_size`, `data_dir`).
    encoder: from `make_encoder`.
    tree: its arrays, e.g. `(params, model_state)`.
    split: "train" or "test".
    mesh: the mesh of `encoder`.

  Returns:
    ([N, D] float32 features, [N] int32 labels) on the host, row i being
    example i of the split.

  Raises:
    ValueError: if `split` is neither "train" nor "test".
  """
  if split not in ("train", "test"):
    raise ValueError(f"encode_split: `split` must be 'train' or 'test', got "
                     f"{split!r}.")
  info = dataset_info(config)
  size = info.num_train if split == "train" else info.num_test
  batches = data_lib.load(
      config.dataset.name, split, batch_size=config.batch_size, shuffle=False,
      num_epochs=1, drop_remainder=False, process_index=jax.process_index(),
      process_count=jax.process_count(), **dataset_options(config))
  local = config.batch_size // jax.process_count()
  sharding = data_sharded(mesh)
  # XLA:CPU runs independent programs concurrently: encoder calls in flight
  # can enter their collectives in different orders in different processes,
  # and even in one process the devices' threads can all wait in different
  # calls' all-gathers until XLA aborts (seen with a few hundred calls in
  # flight on 4 or 8 devices). So on a CPU mesh of several devices each call
  # finishes before the next starts. Accelerators run a device's programs in
  # order.
  one_at_a_time = mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"
  features, ids = [], []
  for _ in range(math.ceil(size / config.batch_size)):
    batch = next(batches, None)
    rows = 0 if batch is None else len(batch["label"])
    images = np.zeros((local, *info.image_shape), np.uint8)
    padded_ids = np.full((local, 2), -1, np.int32)  # (label, index)
    if rows:
      images[:rows] = batch["image"]
      padded_ids[:rows] = np.stack([batch["label"], batch["index"]], 1)
    global_images, global_ids = data_lib.to_global_array(
        (images, padded_ids), sharding)
    encoded = encoder(tree, global_images, global_ids)
    if one_at_a_time:
      jax.block_until_ready(encoded)
    features.append(encoded[0])
    ids.append(encoded[1])
  labels, index = np.concatenate(jax.device_get(ids)).T
  order = np.argsort(index)[np.sum(index < 0):]  # Padded rows are -1.
  features = np.concatenate(jax.device_get(features)).astype(np.float32)
  return features[order], labels[order]


def extract_features(config, method, state: TrainState, *, mesh=None,
                     encoder: Callable | None = None) -> Features:
  """Encodes both splits of `config.dataset` with `method.encode` of the
  state's networks (see `encode_split`)."""
  mesh = make_mesh(config) if mesh is None else mesh
  encoder = method_encoder(method, mesh) if encoder is None else encoder
  tree = (state.params, state.model_state, state.method_state)
  train = encode_split(config, encoder, tree, "train", mesh=mesh)
  test = encode_split(config, encoder, tree, "test", mesh=mesh)
  return Features(train[0], train[1], test[0], test[1])


def score(features: Features, *, num_classes: int, linear: bool,
          seed: int = 0) -> dict[str, float]:
  """The module docstring's metrics of frozen features, as floats.

  Args:
    features: both splits' features and labels.
    num_classes: number of labels.
    linear: whether to train the fast linear probe (`probe_top1`).
    seed: the probe's seed.

  Example (two well separated classes):
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(2), 25).astype(np.int32)
    >>> x = (rng.normal(size=(50, 4)) + 4 * np.eye(4)[y]).astype(np.float32)
    >>> scores = score(Features(x, y, x, y), num_classes=2, linear=True)
    >>> print(sorted(scores))
    ['embedding_std', 'knn1_top1', 'knn_top1', 'probe_top1', 'rankme']
    >>> print(scores["knn_top1"], scores["probe_top1"])
    1.0 1.0
  """
  knn = evaluate.knn_accuracy(
      features.train, features.train_labels, features.test,
      features.test_labels, num_classes=num_classes,
      k=min(KNN_K, len(features.train)), temperature=KNN_TEMPERATURE)
  # With k = 1 the vote weighting cannot change the prediction.
  knn1 = evaluate.knn_accuracy(
      features.train, features.train_labels, features.test,
      features.test_labels, num_classes=num_classes, k=1,
      weighting="uniform")
  scores = {"knn_top1": knn.top1, "knn1_top1": knn1.top1,
            "embedding_std": evaluate.embedding_std(features.test),
            "rankme": evaluate.rankme(features.test)}
  if linear:
    scores["probe_top1"] = evaluate.linear_probe(
        features.train, features.train_labels, features.test,
        features.test_labels, num_classes=num_classes, seed=seed).test_top1
  return {k: float(v) for k, v in jax.device_get(scores).items()}


# The semi-supervised settings of the SimCLR and BYOL papers: 1% and 10% of
# the training labels (4 and 40 per class on mnist5k).
FEW_LABEL_FRACTIONS = (0.01, 0.1)
# The subsets are drawn once, with this seed, whatever the run's seed, so
# that every method, every seed and the raw pixels see the same labels.
FEW_LABEL_SEED = 0


def few_label_scores(features: Features, *, num_classes: int, seed: int = 0,
                     fractions=FEW_LABEL_FRACTIONS) -> dict[str, float]:
  """kNN and fast-probe top-1 trained on a few labels of the train split.

  For each fraction f, the train features are restricted to
  `evaluate.class_balanced_subset(train_labels, f, seed=FEW_LABEL_SEED)`
  (stratified, fixed, the same for every method) and scored as `score`
  does; the test split is whole. Keys `knn_top1_<p>pct` and
  `probe_top1_<p>pct`, p = 100·f.

  Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(2), 100).astype(np.int32)
    >>> x = (rng.normal(size=(200, 4)) + 4 * np.eye(4)[y]).astype(np.float32)
    >>> scores = few_label_scores(Features(x, y, x, y), num_classes=2)
    >>> print(sorted(scores))
    ['knn_top1_10pct', 'knn_top1_1pct', 'probe_top1_10pct', 'probe_top1_1pct']
  """
  scores = {}
  for fraction in fractions:
    rows = evaluate.class_balanced_subset(
        features.train_labels, fraction, num_classes=num_classes,
        seed=FEW_LABEL_SEED)
    subset = features._replace(train=features.train[rows],
                               train_labels=features.train_labels[rows])
    few = score(subset, num_classes=num_classes, linear=True, seed=seed)
    suffix = f"_{100 * fraction:g}pct"
    scores["knn_top1" + suffix] = few["knn_top1"]
    scores["probe_top1" + suffix] = few["probe_top1"]
  return scores


def evaluate_state(config, state: TrainState, *, method=None, mesh=None,
                   encoder: Callable | None = None, linear: bool = True
                   ) -> dict[str, float]:
  """Encodes `config.dataset` with `state`'s networks and scores them.

  Args:
    config: the run's config.
    state: a `TrainState` (from `train` or `restore_state`).
    method: the run's `Method`; default `ssljax.methods.build(config)`.
    mesh: the mesh to encode on; default `make_mesh(config)`.
    encoder: a `method_encoder` result to reuse (saves a compilation).
    linear: whether to train the linear probe; then the few-label
      scores (`few_label_scores`) come too.

  Returns:
    The metrics of `score` (and `few_label_scores`).
  """
  method = methods.build(config) if method is None else method
  features = extract_features(config, method, state, mesh=mesh,
                              encoder=encoder)
  num_classes = dataset_info(config).num_classes
  scores = score(features, num_classes=num_classes, linear=linear,
                 seed=config.seed)
  if linear:
    scores.update(few_label_scores(features, num_classes=num_classes,
                                   seed=config.seed))
  return scores


def eval_every(config) -> int:
  """`config.eval_every` if set (0 = only at the end), else the checkpoint
  interval, so that every checkpoint has its scores in the log."""
  every = config.get("eval_every")
  return config.checkpoint_every if every is None else every


def can_evaluate(config) -> bool:
  """Whether the dataset has labels and a test split to score with; if not,
  one log line says that evaluation is skipped."""
  info = dataset_info(config)
  if info.labelled and info.num_test and info.num_classes:
    return True
  reason = ("its images are unlabelled" if not info.labelled
            else "it has no test split (an image folder without val/)")
  logging.warning("evaluation skipped: %s %s.", config.dataset.name, reason)
  return False


def evaluation_hook(config, *, method=None) -> Callable:
  """A `train` hook: `evaluate_state` every `eval_every(config)` steps
  (without the linear probe) and at `config.total_steps` (with it); a
  dataset that cannot be scored (`can_evaluate`) gives a hook that does
  nothing.

  The mesh and the encoder are built on the first evaluation and reused.
  """
  if not can_evaluate(config):
    return lambda step, state: None
  method = methods.build(config) if method is None else method
  every = eval_every(config)
  cache = {}

  def hook(step: int, state: TrainState):
    last = step == config.total_steps
    if not (last or (every and step % every == 0)):
      return None
    if not cache:
      cache["mesh"] = make_mesh(config)
      cache["encoder"] = method_encoder(method, cache["mesh"])
    return evaluate_state(config, state, method=method, mesh=cache["mesh"],
                          encoder=cache["encoder"], linear=last)

  return hook
