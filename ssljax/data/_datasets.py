"""The dataset registry: `DATASETS`, `info(name)`, `load(name, split, ...)`."""

from __future__ import annotations

import contextlib
import io
import os
from typing import NamedTuple

from absl import logging

from ssljax.data import _balanced
from ssljax.data import _mnist5k
from ssljax.data import _pipeline
from ssljax.data import _tf
from ssljax.data import augment


class DatasetInfo(NamedTuple):
  """What a training or evaluation loop needs to know about a dataset.

  Attributes:
    name: registry name, e.g. "cifar10".
    image_shape: (H, W, C) of the uint8 images `load` yields.
    num_classes: number of labels (used for evaluation only).
    num_train: size of the "train" split.
    num_test: size of the "test" split.
    mean: per-channel mean on the [0, 1] scale, for `augment.views`.
    std: per-channel standard deviation on the [0, 1] scale.
    tfds_name: the tfds builder (and config) behind it.
    test_split: the tfds split that `split="test"` reads.
  """
  name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  num_train: int
  num_test: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  tfds_name: str
  test_split: str = "test"


_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
# stl10 and imagenette are ImageNet photographs (or close to): ImageNet's
# statistics, as is customary for them.
_IMAGENET_STATS = (augment.IMAGENET_MEAN, augment.IMAGENET_STD)
_MNIST_STATS = (augment.MNIST_MEAN, augment.MNIST_STD)

_INFOS = (
    DatasetInfo("mnist5k", (28, 28, 1), 10, 4000, 1000, *_MNIST_STATS,
                tfds_name="mnist5k"),
    DatasetInfo("cifar10", (32, 32, 3), 10, 50_000, 10_000, *_CIFAR10_STATS,
                tfds_name="cifar10"),
    DatasetInfo("cifar100", (32, 32, 3), 100, 50_000, 10_000,
                *_CIFAR100_STATS, tfds_name="cifar100"),
    # stl10 also has the 100,000-image "unlabelled" split (labels -1), the
    # usual pre-training split: load(..., split="unlabelled") or
    # "train+unlabelled".
    DatasetInfo("stl10", (96, 96, 3), 10, 5000, 8000, *_IMAGENET_STATS,
                tfds_name="stl10"),
    DatasetInfo("imagenette", (224, 224, 3), 10, 9469, 3925,
                *_IMAGENET_STATS, tfds_name="imagenette/320px-v2",
                test_split="validation"),
    DatasetInfo("imagenet2012", (224, 224, 3), 1000, 1_281_167, 50_000,
                *_IMAGENET_STATS, tfds_name="imagenet2012",
                test_split="validation"),
)
_REGISTRY = {i.name: i for i in _INFOS}
DATASETS = tuple(_REGISTRY)


def info(name: str) -> DatasetInfo:
  """The `DatasetInfo` of a registered dataset.

  >>> info("mnist5k").image_shape, info("mnist5k").num_train
  ((28, 28, 1), 4000)
  """
  if name not in _REGISTRY:
    raise ValueError(f"info: unknown dataset {name!r}; available: "
                     f"{', '.join(DATASETS)}.")
  return _REGISTRY[name]


def default_data_dir() -> str:
  """`$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (tfds's own default)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def build_mnist5k(data_dir: str) -> _mnist5k.Mnist5k:
  """Builds mnist5k in `data_dir` unless it is there (a few seconds)."""
  builder = _mnist5k.Mnist5k(data_dir=data_dir, file_format="array_record")
  if builder.is_prepared():
    return builder
  # tfds prints its progress messages to stdout; keep stdout for the caller's
  # own output (the CLI's last line is its summary) and log them instead.
  with contextlib.redirect_stdout(io.StringIO()) as messages:
    try:
      builder.download_and_prepare()
    except OSError:
      # Processes sharing `data_dir` may build concurrently; the loser's final
      # rename onto the finished folder fails, and the winner's copy is used.
      if not builder.is_prepared():
        raise
  logging.info("%s", messages.getvalue().strip())
  return builder


def load(name: str, split: str, *, batch_size: int, seed: int = 0,
         shuffle: bool = True, num_epochs: int | None = None,
         drop_remainder: bool = True, data_dir: str | None = None,
         process_index: int | None = None, process_count: int | None = None,
         classes_per_batch: int | None = None):
  """An iterator of this process's batches of a registered dataset.

  Yields `{"image": uint8 [b, H, W, C], "label": int32 [b], "index": int32
  [b]}` (`index`: the examples' rows in the split) with
  b = batch_size // process_count (this process's slice of the global batch;
  `to_global_array` assembles the global one). It has `get_state()` (a
  JSON-able dict) and `set_state(state)`; restoring the state gives the same
  batches as an uninterrupted run. `num_epochs=None` repeats forever;
  `shuffle` reshuffles every epoch from `seed`.

  "mnist5k" is built in `data_dir` on first use and read with
  `tfds.data_source` + grain (see `pipeline`). The other datasets are read
  with tf.data and need TensorFlow (`pip install 'ssljax[tf]'`); `split` is a
  tfds split string, "test" meaning `info(name).test_split`. `data_dir`
  defaults to `default_data_dir()`.

  With `classes_per_batch` = P, the batches are class-balanced instead, P
  classes × batch_size / P images each, endless (`ssljax.data.balanced`,
  seeded by `seed`); they need random access to the records, which
  "mnist5k" has.

  >>> import tempfile
  >>> it = load("mnist5k", "test", batch_size=8, data_dir=tempfile.mkdtemp())
  >>> batch = next(it)
  >>> print(batch["image"].shape, batch["image"].dtype, batch["label"].dtype)
  (8, 28, 28, 1) uint8 int32
  """
  meta = info(name)
  data_dir = data_dir or default_data_dir()
  options = dict(batch_size=batch_size, seed=seed, shuffle=shuffle,
                 num_epochs=num_epochs, drop_remainder=drop_remainder,
                 process_index=process_index, process_count=process_count)
  if classes_per_batch is not None:
    return _balanced_batches(name, split, data_dir, classes_per_batch,
                             **options)
  if name == "mnist5k":
    return _pipeline.pipeline(_mnist5k_source(data_dir, split), **options)
  return _tf.load(name, meta.tfds_name,
                  meta.test_split if split == "test" else split,
                  data_dir=data_dir, image_shape=meta.image_shape, **options)


def _mnist5k_source(data_dir: str, split: str) -> _pipeline.CheckedSource:
  builder = build_mnist5k(data_dir)
  return _pipeline.CheckedSource(builder.as_data_source(split=split))


def _balanced_batches(name: str, split: str, data_dir: str,
                      classes_per_batch: int, *, batch_size: int, seed: int,
                      num_epochs: int | None, process_index: int | None,
                      process_count: int | None, **unused
                      ) -> _balanced.BalancedBatches:
  del unused  # shuffle and drop_remainder: every balanced batch is drawn.
  fn = "load"
  if name != "mnist5k":
    raise ValueError(f"{fn}: `classes_per_batch` needs random access to the "
                     f"records, which only 'mnist5k' has; for {name!r} pass "
                     f"`ssljax.data.balanced(source, ...)` over a random-"
                     f"access source as `train`'s `data`.")
  if num_epochs is not None:
    raise ValueError(f"{fn}: class-balanced batches are endless; "
                     f"`num_epochs` must be None, got {num_epochs!r}.")
  if isinstance(classes_per_batch, bool) or not isinstance(
      classes_per_batch, int) or classes_per_batch < 1 or \
      batch_size % classes_per_batch:
    raise ValueError(f"{fn}: `classes_per_batch` must be a positive divisor "
                     f"of `batch_size` = {batch_size}, got "
                     f"{classes_per_batch!r}.")
  return _balanced.balanced(
      _mnist5k_source(data_dir, split), classes_per_batch=classes_per_batch,
      samples_per_class=batch_size // classes_per_batch, seed=seed,
      process_index=process_index, process_count=process_count)
