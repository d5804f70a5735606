"""tf.data path for the standard tfds image datasets (the optional `tf` extra).

TensorFlow is imported only when such a dataset is loaded. Each process reads
its own even share of the split (`tfds.split_for_jax_process`). Epoch e is a
fresh pipeline whose file order and shuffle buffer are seeded from
(seed, e); a batch never spans two epochs. The iterator state is
`{"epoch", "batch"}`: restoring rebuilds epoch e and skips the batches already
seen as raw, undecoded records, so resuming costs re-reading part of one epoch
but no decoding, and gives the same order as an uninterrupted run.

Images of variable size (imagenette, imagenet2012) are decoded on the host,
their shorter side resized to the dataset's side (224) with anti-aliasing and
centre-cropped, because the random crops are taken on device from
fixed-size batches.

Batches carry each example's `index`, its row in the prepared split (the
order of tfds's shard files), from the record ids tfds adds on request.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from ssljax.data import _pipeline

SHUFFLE_BUFFER = 10_000  # raw (encoded) records, so ~1 GB at ImageNet sizes


def import_tensorflow(name: str):
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(
        f"ssljax.data.load({name!r}) reads standard tfds datasets with "
        "tf.data, which needs TensorFlow: pip install 'ssljax[tf]' (or pip "
        "install tensorflow). The embedded 'mnist5k' needs no TensorFlow."
    ) from error
  return tf


def prepare(builder, name: str, tfds_name: str) -> None:
  """Downloads and prepares `builder` if needed; says how to do it if not."""
  if builder.is_prepared():
    return
  try:
    builder.download_and_prepare()
  # Any failure (no network, checksum, missing manual download) means the
  # user has to prepare the dataset by hand; keep the cause chained.
  except Exception as error:  # pylint: disable=broad-except
    root = builder.data_dir_root
    manual = ""
    if name == "imagenet2012":
      manual = (" imagenet2012 cannot be downloaded automatically: put "
                "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                f"{root}/downloads/manual/ first.")
    raise RuntimeError(
        f"Dataset {name!r} is not prepared in {root} and could not be "
        f"prepared here ({type(error).__name__}: {error}). Prepare it once "
        f"where the network is reachable: `tfds build {tfds_name} "
        f"--data_dir={root}`, then pass that `data_dir` (or set "
        f"$TFDS_DATA_DIR).{manual}") from error


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _square(tf, image, side: int):
  """Shorter side resized to `side` (anti-aliased), then the central square."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = side / tf.reduce_min(shape)
  size = tf.cast(tf.math.ceil(shape * scale), tf.int32)
  image = tf.image.resize(image, size, method="bilinear", antialias=True)
  image = tf.image.resize_with_crop_or_pad(image, side, side)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _epoch(tf, builder, split: str, *, epoch: int, skip: int, batch: int,
           seed: int, shuffle: bool, drop_remainder: bool,
           image_shape: tuple[int, int, int]) -> Iterator[dict]:
  epoch_seed = _epoch_seed(seed, epoch)
  data = builder.as_dataset(
      split=split, shuffle_files=shuffle,
      read_config=tfds.ReadConfig(shuffle_seed=epoch_seed, add_tfds_id=True),
      decoders={"image": tfds.decode.SkipDecoding()})
  if shuffle:
    data = data.shuffle(SHUFFLE_BUFFER, seed=epoch_seed)
  feature = builder.info.features["image"]
  fixed = tuple(feature.shape) == tuple(image_shape)

  def decode(example):
    image = feature.decode_example(example["image"])
    if not fixed:
      image = _square(tf, image, image_shape[0])
    return {"image": image, "label": tf.cast(example["label"], tf.int32),
            "tfds_id": example["tfds_id"]}

  data = data.skip(skip * batch).map(decode,
                                     num_parallel_calls=tf.data.AUTOTUNE)
  data = data.batch(batch, drop_remainder=drop_remainder)
  offsets = _shard_offsets(builder)
  for numpy_batch in tfds.as_numpy(data.prefetch(tf.data.AUTOTUNE)):
    ids = numpy_batch.pop("tfds_id")
    numpy_batch["index"] = np.array([_row(offsets, i) for i in ids], np.int32)
    yield numpy_batch


def _shard_offsets(builder) -> dict[str, int]:
  """{shard file name: row of its first record in its split}."""
  offsets = {}
  for split in builder.info.splits.values():
    starts = np.cumsum([0, *split.shard_lengths[:-1]])
    offsets.update(zip((os.path.basename(f) for f in split.filenames),
                       starts.tolist()))
  return offsets


def _row(offsets: dict[str, int], tfds_id: bytes) -> int:
  """The row in its split of the record `tfds_id` ("<shard file>__<i>", i
  counted within the shard)."""
  shard, _, position = tfds_id.decode().rpartition("__")
  return offsets[os.path.basename(shard)] + int(position)


class EpochIterator:
  """Iterates `make_epoch(epoch, skip)` epoch after epoch, with a JSON state."""

  def __init__(self, make_epoch: Callable[..., Iterator[dict]],
               num_epochs: int | None):
    self._make_epoch = make_epoch
    self._num_epochs = num_epochs
    self._epoch = 0
    self._batch = 0
    self._current: Iterator[dict] | None = None

  def __iter__(self) -> "EpochIterator":
    return self

  def __next__(self) -> dict:
    while self._num_epochs is None or self._epoch < self._num_epochs:
      if self._current is None:
        self._current = self._make_epoch(epoch=self._epoch, skip=self._batch)
      try:
        batch = next(self._current)
      except StopIteration:
        if self._batch == 0:
          raise ValueError("load: an epoch of this process's shard holds no "
                           "full batch; lower `batch_size` or set "
                           "`drop_remainder=False`.") from None
        self._epoch, self._batch, self._current = self._epoch + 1, 0, None
        continue
      self._batch += 1
      return batch
    raise StopIteration

  def get_state(self) -> dict[str, int]:
    return {"epoch": self._epoch, "batch": self._batch}

  def set_state(self, state: dict[str, Any]) -> None:
    self._epoch, self._batch = int(state["epoch"]), int(state["batch"])
    self._current = None


def iterate(builder, split: str, *, image_shape: tuple[int, int, int],
            batch_size: int, seed: int, shuffle: bool,
            num_epochs: int | None, drop_remainder: bool,
            process_index: int | None, process_count: int | None,
            name: str) -> EpochIterator:
  """Batches of a prepared tfds `builder`'s split for this process."""
  tf = import_tensorflow(name)
  index, count, batch = _pipeline.process_slice(batch_size, process_index,
                                                process_count, "load")
  _pipeline.check_num_epochs(num_epochs, "load")
  shard = tfds.split_for_jax_process(split, process_index=index,
                                     process_count=count,
                                     drop_remainder=drop_remainder)
  make_epoch = functools.partial(
      _epoch, tf, builder, shard, batch=batch, seed=seed, shuffle=shuffle,
      drop_remainder=drop_remainder, image_shape=image_shape)
  return EpochIterator(make_epoch, num_epochs)


def load(name: str, tfds_name: str, split: str, *, data_dir: str,
         **options) -> EpochIterator:
  """`iterate` over a standard dataset, prepared first if it can be."""
  import_tensorflow(name)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  prepare(builder, name, tfds_name)
  return iterate(builder, split, name=name, **options)
