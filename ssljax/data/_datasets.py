"""The dataset registry: `DATASETS`, `info(name)`, `load(name, split, ...)`.

Fixed-size datasets (mnist5k, CIFAR, STL-10) yield their uint8 images as
they are; their views are cropped on the device. Variable-size ones
(imagenette, imagenet2012, "imagefolder") are decoded on the host at full
resolution and cropped there (`pipeline`'s `image_size` and `crops`).
imagenette and imagenet2012 prepared as ArrayRecord (`tfds build ...
--file_format=array_record`) are read through `tfds.data_source` + grain
without TensorFlow; prepared as TFRecord (tfds's default), through tf.data.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, NamedTuple, Sequence

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from ssljax.data import _balanced
from ssljax.data import _examples
from ssljax.data import _folder
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
    tfds_name: the tfds builder (and config) behind it ("" for a folder).
    test_split: the tfds split that `split="test"` reads.
    variable_size: True when images are decoded on the host at full
      resolution and cropped there (imagenette, imagenet2012, image
      folders); `image_shape` is then (S, S, 3), S the view side.
    labelled: whether the labels mean classes (False for a folder of plain
      images, whose labels are -1 and which has no evaluation).
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
  variable_size: bool = False
  labelled: bool = True


DEFAULT_IMAGE_SIZE = 224  # view side of variable-size datasets
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
    DatasetInfo("imagenette", (DEFAULT_IMAGE_SIZE,) * 2 + (3,), 10, 9469,
                3925, *_IMAGENET_STATS, tfds_name="imagenette/320px-v2",
                test_split="validation", variable_size=True),
    DatasetInfo("imagenet2012", (DEFAULT_IMAGE_SIZE,) * 2 + (3,), 1000,
                1_281_167, 50_000, *_IMAGENET_STATS, tfds_name="imagenet2012",
                test_split="validation", variable_size=True),
)
_REGISTRY = {i.name: i for i in _INFOS}
FOLDER = "imagefolder"
DATASETS = (*_REGISTRY, FOLDER)


def info(name: str, *, path: str | None = None,
         image_size: int | None = None) -> DatasetInfo:
  """The `DatasetInfo` of a registered dataset or of an image folder.

  Args:
    name: a name of `DATASETS`; "imagefolder" reads `path`.
    path: the folder of "imagefolder" (`train/`, optionally `val/`; see
      `load`), scanned here: class names sorted -> labels; plain images are
      unlabelled (`labelled` False, `num_classes` 0); `num_test` is 0
      without `val/`.
    image_size: the view side S of variable-size datasets (default 224);
      fixed-size datasets ignore it.

  Returns:
    The `DatasetInfo`.

  Raises:
    ValueError: for an unknown name, a `path` with another dataset than
      "imagefolder" (or none with it), or a folder without images.
    FileNotFoundError: if `path/train` does not exist.

  >>> info("mnist5k").image_shape, info("mnist5k").num_train
  ((28, 28, 1), 4000)
  >>> info("imagenet2012", image_size=160).image_shape
  (160, 160, 3)
  """
  fn = "info"
  _check_path(name, path, fn)
  if name == FOLDER:
    side = _side(image_size, fn)
    train = _folder.scan(path, "train")
    has_val = os.path.isdir(_folder.split_folder(path, "val"))
    num_test = len(_folder.scan(path, "val").paths) if has_val else 0
    return DatasetInfo(
        FOLDER, (side, side, 3), len(train.classes), len(train.paths),
        num_test, *_IMAGENET_STATS, tfds_name="", test_split="val",
        variable_size=True, labelled=bool(train.classes))
  if name not in _REGISTRY:
    raise ValueError(f"{fn}: unknown dataset {name!r}; available: "
                     f"{', '.join(DATASETS)}.")
  meta = _REGISTRY[name]
  if meta.variable_size:
    side = _side(image_size, fn)
    meta = meta._replace(image_shape=(side, side, 3))
  return meta


def _side(image_size: int | None, fn: str) -> int:
  if image_size is None:
    return DEFAULT_IMAGE_SIZE
  return _examples.check_size(image_size, "image_size", fn)


def _check_path(name: str, path: str | None, fn: str) -> None:
  if name == FOLDER and not path:
    raise ValueError(f"{fn}: {FOLDER!r} needs `path`, the folder holding "
                     "train/ (and optionally val/).")
  if name != FOLDER and path is not None:
    raise ValueError(f"{fn}: `path` is for {FOLDER!r} only, got it with "
                     f"{name!r}.")


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
         classes_per_batch: int | None = None, path: str | None = None,
         image_size: int | None = None, crops: Sequence[Any] | None = None,
         num_workers: int = 0, num_threads: int | None = None,
         dct_scaling: bool = True, indices: Sequence[int] | None = None):
  """An iterator of this process's batches of a dataset.

  Fixed-size datasets yield `{"image": uint8 [b, H, W, C], "label": int32
  [b], "index": int32 [b]}` (`index`: the examples' rows in the split) with
  b = batch_size // process_count (this process's rows of the global batch;
  `to_global_array` assembles it, the same array for any process count).
  Variable-size datasets (`info(name).variable_size`: imagenette,
  imagenet2012, "imagefolder") are decoded on the host: with `crops`, a
  sequence of `augment.ViewSpec` (only `size`, `scale` and `ratio` are
  read), `{"crops": (uint8 [b, s_v, s_v, 3], ...), "label", "index"}`, each
  view's random-resized crop drawn from the full-resolution image
  (torchvision's sampler) and resized with anti-aliasing; without, `{"image":
  uint8 [b, S, S, 3], ...}`, the shorter side resized to round(S / 0.875)
  and the centre crop (S = `image_size`, default 224). Fixed-size datasets
  ignore `image_size` and `crops`. Crops depend on (seed, epoch, index, view)
  only.

  The iterator has `get_state()` (a JSON-able dict) and `set_state(state)`;
  restoring the state gives the same batches as an uninterrupted run.
  `num_epochs=None` repeats forever; `shuffle` reshuffles every epoch from
  `seed`.

  Sources: "mnist5k" is built in `data_dir` on first use and read with
  `tfds.data_source` + grain (see `pipeline`). "imagefolder" reads
  `path/train` (split "train") or `path/val` (split "val" or "test"): class
  subfolders (labels from the sorted folder names) or plain images (labels
  -1); an unreadable file is replaced by the next readable one, counted and
  logged (the iterator's `unreadable`). Grain decodes in `num_threads`
  threads (default: one per core, up to 16, for host decoding), or in
  `num_workers` worker processes if positive. imagenette and imagenet2012
  prepared as ArrayRecord are read with grain; prepared as TFRecord,
  and the other tfds datasets, with tf.data, which needs TensorFlow (`pip
  install 'ssljax[tf]'`). `split` is a tfds split string for those, "test"
  meaning `info(name).test_split`. `data_dir` defaults to
  `default_data_dir()`. `dct_scaling` lets JPEGs decode at 1/2, 1/4 or 1/8
  when every crop shrinks that much.

  With `indices` (distinct rows of the split, e.g. a labelled subset from
  `ssljax.evaluate.class_balanced_subset(labels(name, split), 0.01, ...)`),
  only those examples are read: they make up the epoch, and `index` stays
  their row in the whole split.

  With `classes_per_batch` = P, the batches are class-balanced instead, P
  classes × batch_size / P images each, endless (`ssljax.data.balanced`,
  seeded by `seed`); they need random access to the records ("mnist5k", a
  labelled "imagefolder", ArrayRecord datasets).

  >>> import tempfile
  >>> it = load("mnist5k", "test", batch_size=8, data_dir=tempfile.mkdtemp())
  >>> batch = next(it)
  >>> print(batch["image"].shape, batch["image"].dtype, batch["label"].dtype)
  (8, 28, 28, 1) uint8 int32
  """
  fn = "load"
  _check_path(name, path, fn)
  meta = info(name, path=None) if name != FOLDER else None
  data_dir = data_dir or default_data_dir()
  options = dict(batch_size=batch_size, seed=seed, shuffle=shuffle,
                 num_epochs=num_epochs, drop_remainder=drop_remainder,
                 process_index=process_index, process_count=process_count)
  host = {}
  if name == FOLDER or meta.variable_size:
    host = dict(image_size=_side(image_size, fn), crops=crops,
                dct_scaling=dct_scaling)
  if num_threads is None and host:
    # Pillow releases the GIL while it decodes and resizes, so threads
    # scale with the cores (docs/data.md).
    num_threads = min(16, os.cpu_count() or 1)
  threads = {} if num_threads is None else dict(num_threads=num_threads)
  source, labels, describe = _random_access(name, meta, split, data_dir,
                                            path)
  rows = None
  if indices is not None:
    if classes_per_batch is not None:
      raise ValueError(f"{fn}: give `indices` or `classes_per_batch`, not "
                       "both.")
    size = len(source) if source is not None else \
        tfds.builder(meta.tfds_name, data_dir=data_dir).info.splits[
            meta.test_split if split == "test" else split].num_examples
    rows = _check_indices(indices, size, fn)
  if source is not None and rows is not None:
    source, labels = _pipeline.Rows(source, rows), \
        None if labels is None else np.asarray(labels)[rows]
    describe = describe and (lambda i, d=describe: d(source.original(i)))
  if classes_per_batch is not None:
    if source is None:
      raise ValueError(
          f"{fn}: `classes_per_batch` needs random access to the records, "
          f"which {name!r} prepared as TFRecord lacks; use 'mnist5k', an "
          "'imagefolder', a dataset prepared as ArrayRecord, or pass "
          "`ssljax.data.balanced(source, ...)` as `train`'s `data`.")
    return _balanced_batches(source, labels, classes_per_batch,
                             describe=describe, **options, **host, **threads)
  if source is not None:
    batches = _pipeline.pipeline(source, num_workers=num_workers,
                                 describe=describe, labels=labels, **options,
                                 **host, **threads)
    return batches if rows is None else _pipeline.OriginalIndex(batches, rows)
  return _tf.load(name, meta.tfds_name,
                  meta.test_split if split == "test" else split,
                  data_dir=data_dir, indices=rows, **options, **host,
                  **threads)


def _check_indices(indices: Sequence[int], size: int, fn: str) -> np.ndarray:
  """`indices` as int64 [n], checked: distinct rows in [0, size), n >= 1."""
  rows = np.asarray(indices)
  if rows.ndim != 1 or not rows.size or \
      not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or \
      rows.max() >= size or len(np.unique(rows)) != rows.size:
    raise ValueError(f"{fn}: `indices` must be distinct int rows of the "
                     f"split in [0, {size}), at least one, got "
                     f"{np.asarray(indices)!r:.80}.")
  return rows.astype(np.int64)


def labels(name: str, split: str, *, data_dir: str | None = None,
           path: str | None = None) -> np.ndarray:
  """The labels of every example of a split, int32 [N], row i being the
  example that `load` yields with `index` i (-1 for unlabelled images).

  Images are not decoded: an image folder's labels come from its class
  subfolders; mnist5k and ArrayRecord datasets are read record by record;
  TFRecord datasets through tf.data with the images left encoded.

  >>> import tempfile
  >>> print(labels("mnist5k", "test", data_dir=tempfile.mkdtemp())[:5])
  [3 8 7 2 6]
  """
  _check_path(name, path, "labels")
  meta = info(name, path=None) if name != FOLDER else None
  data_dir = data_dir or default_data_dir()
  source, known, _ = _random_access(name, meta, split, data_dir, path)
  if known is not None:
    return np.asarray(known, np.int32)
  if source is not None:
    return np.array([source[i]["label"] for i in range(len(source))],
                    np.int32)
  return _tf.labels(name, meta.tfds_name,
                    meta.test_split if split == "test" else split,
                    data_dir=data_dir)


def _random_access(name: str, meta: DatasetInfo | None, split: str,
                   data_dir: str, path: str | None):
  """(source, labels or None, describe) of a dataset with random access, or
  (None, None, None) for one read with tf.data."""
  if name == FOLDER:
    folder = _folder.scan(path, split)
    return _folder.FolderSource(folder), folder.labels, \
        lambda i: folder.paths[i]
  if name == "mnist5k":
    return _mnist5k_source(data_dir, split), None, None
  if not meta.variable_size:
    return None, None, None
  builder = tfds.builder(meta.tfds_name, data_dir=data_dir)
  tfds_split = meta.test_split if split == "test" else split
  source = array_record_source(builder, tfds_split)
  describe = lambda i: f"{meta.tfds_name} {tfds_split} record {i}"
  return (None, None, None) if source is None else (source, None, describe)


def array_record_source(builder, split: str
                        ) -> _pipeline.CheckedSource | None:
  """The records of `builder`'s `split` with undecoded image bytes, if it is
  prepared in a random-access format (ArrayRecord); None otherwise."""
  if not builder.is_prepared():
    return None
  try:
    source = builder.as_data_source(
        split=split, decoders={"image": tfds.decode.SkipDecoding()})
  except NotImplementedError:  # prepared as TFRecord
    return None
  return _pipeline.CheckedSource(source)


def _mnist5k_source(data_dir: str, split: str) -> _pipeline.CheckedSource:
  builder = build_mnist5k(data_dir)
  return _pipeline.CheckedSource(builder.as_data_source(split=split))


def _balanced_batches(source, labels, classes_per_batch: int, *,
                      batch_size: int, num_epochs: int | None, **options):
  fn = "load"
  for unused in ("shuffle", "drop_remainder"):
    options.pop(unused)  # every balanced batch is drawn, endlessly
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
      source, classes_per_batch=classes_per_batch,
      samples_per_class=batch_size // classes_per_batch, labels=labels,
      **options)
