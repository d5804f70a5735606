"""tf.data path for the tfds datasets prepared as TFRecord (the `tf` extra).

TensorFlow is imported only when such a dataset is loaded. Epoch e is a fresh
pipeline whose file order and shuffle buffer are seeded from (seed, e); a
batch never spans two epochs. Every process reads the same stream of raw,
undecoded records, cuts it into global batches and keeps its contiguous rows
[p·B/P, (p+1)·B/P) of each, which only it decodes: the global batch is the
same for any process count, at the price of every process reading every
record (for many hosts, prepare the dataset as ArrayRecord and read it with
grain, which reads only each process's rows). The iterator state is
`{"epoch", "batch"}`: restoring rebuilds epoch e and skips the batches
already seen as raw records, so resuming costs re-reading part of one epoch
but no decoding, and gives the same order as an uninterrupted run.

Fixed-size images (CIFAR, STL-10) are decoded by tf.data. Images of variable
size (imagenette, imagenet2012) are decoded on the host by
`_examples.HostDecoder` in a thread pool, with crops drawn from the
full-resolution picture, as in the grain path.

Batches carry each example's `index`, its row in the prepared split (the
order of tfds's shard files), from the record ids tfds adds on request.
"""

from __future__ import annotations

from concurrent import futures
import functools
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from ssljax.data import _examples
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


def _epoch(tf, builder, split: str, *, epoch: int, skip: int,
           global_batch: int, rows: slice, seed: int, shuffle: bool,
           drop_remainder: bool, decoder: _examples.HostDecoder | None,
           pool: futures.Executor, keep: np.ndarray | None) -> Iterator[dict]:
  epoch_seed = _epoch_seed(seed, epoch)
  data = builder.as_dataset(
      split=split, shuffle_files=shuffle,
      read_config=tfds.ReadConfig(shuffle_seed=epoch_seed, add_tfds_id=True),
      decoders={"image": tfds.decode.SkipDecoding()})
  if keep is not None:
    data = data.filter(_row_filter(tf, builder, keep))
  if shuffle:
    data = data.shuffle(SHUFFLE_BUFFER, seed=epoch_seed)
  data = data.skip(skip * global_batch).batch(global_batch,
                                              drop_remainder=drop_remainder)
  # This process's rows of each global batch, regrouped into its batches.
  data = data.map(lambda batch: {key: value[rows.start:rows.stop]
                                 for key, value in batch.items()}).unbatch()
  if decoder is None:
    feature = builder.info.features["image"]
    data = data.map(lambda example: {
        **example, "image": feature.decode_example(example["image"])},
                    num_parallel_calls=tf.data.AUTOTUNE)
  data = data.batch(rows.stop - rows.start).prefetch(tf.data.AUTOTUNE)
  offsets = _shard_offsets(builder)
  for batch in tfds.as_numpy(data):
    index = np.array([_row(offsets, i) for i in batch.pop("tfds_id")],
                     np.int32)
    label = batch["label"].astype(np.int32)
    if decoder is None:
      yield {"image": batch["image"], "label": label, "index": index}
      continue
    examples = list(pool.map(
        lambda i: _examples.decoded_example(
            decoder, int(index[i]), {"image": batch["image"][i],
                                     "label": label[i]},
            draw=(epoch, int(index[i])), source=None),
        range(len(index))))
    stacked = _examples.stack(examples)
    del stacked[_examples.UNREADABLE]  # no random access: errors raise
    yield stacked


def _shard_offsets(builder) -> dict[str, int]:
  """{shard file name: row of its first record in its split}."""
  offsets = {}
  for split in builder.info.splits.values():
    starts = np.cumsum([0, *split.shard_lengths[:-1]])
    offsets.update(zip((os.path.basename(f) for f in split.filenames),
                       starts.tolist()))
  return offsets


def _row_filter(tf, builder, keep: np.ndarray) -> Callable:
  """A tf.data predicate: whether a raw record's row in its split is marked
  in the boolean mask `keep` (the rows of `_row`, computed in the graph)."""
  offsets = _shard_offsets(builder)
  starts = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
      tf.constant(list(offsets)), tf.constant(list(offsets.values()),
                                              tf.int64)), -1)
  mask = tf.constant(keep)

  def predicate(example):
    tfds_id = example["tfds_id"]
    shard = tf.strings.regex_replace(
        tf.strings.regex_replace(tfds_id, r"__[0-9]+$", ""), r"^.*/", "")
    position = tf.strings.to_number(
        tf.strings.regex_replace(tfds_id, r"^.*__", ""), tf.int64)
    return tf.gather(mask, starts.lookup(shard) + position)

  return predicate


def _row(offsets: dict[str, int], tfds_id: bytes) -> int:
  """The row in its split of the record `tfds_id` ("<shard file>__<i>", i
  counted within the shard)."""
  shard, _, position = tfds_id.decode().rpartition("__")
  return offsets[os.path.basename(shard)] + int(position)


class EpochIterator:
  """Iterates `make_epoch(epoch, skip)` epoch after epoch, with a JSON state.

  An epoch that gives this process no batch is an error when epochs are
  endless or batches must be full (the batch is larger than an epoch).
  """

  def __init__(self, make_epoch: Callable[..., Iterator[dict]],
               num_epochs: int | None, drop_remainder: bool):
    self._make_epoch = make_epoch
    self._num_epochs = num_epochs
    self._drop_remainder = drop_remainder
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
        if self._batch == 0 and (self._drop_remainder
                                 or self._num_epochs is None):
          raise ValueError("load: an epoch holds no full global batch (or "
                           "none of this process's rows); lower "
                           "`batch_size` or set `drop_remainder=False`."
                           ) from None
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


def iterate(builder, split: str, *, batch_size: int, seed: int,
            shuffle: bool, num_epochs: int | None, drop_remainder: bool,
            process_index: int | None, process_count: int | None,
            name: str, image_size: int | None = None,
            crops: Sequence[Any] | None = None, dct_scaling: bool = True,
            num_threads: int = 8, indices: np.ndarray | None = None
            ) -> EpochIterator:
  """Batches of a prepared tfds `builder`'s split for this process.

  With `image_size`, the images are decoded on the host in `num_threads`
  threads (see `ssljax.data.pipeline` for `image_size`, `crops` and
  `dct_scaling`); without, by tf.data. With `indices`, only those rows of
  the split are read (the other raw records are skipped before the shuffle).
  """
  tf = import_tensorflow(name)
  fn = "load"
  index, count, batch = _pipeline.process_slice(batch_size, process_index,
                                                process_count, fn)
  _pipeline.check_num_epochs(num_epochs, fn)
  decoder = None if image_size is None else _pipeline.host_decoder(
      image_size, crops, seed, dct_scaling, fn)
  make_epoch = functools.partial(
      _epoch, tf, builder, split, global_batch=batch_size,
      rows=slice(index * batch, (index + 1) * batch), seed=seed,
      shuffle=shuffle, drop_remainder=drop_remainder, decoder=decoder,
      pool=futures.ThreadPoolExecutor(num_threads),
      keep=None if indices is None else _mask(
          indices, builder.info.splits[split].num_examples))
  return EpochIterator(make_epoch, num_epochs, drop_remainder)


def _mask(indices: np.ndarray, size: int) -> np.ndarray:
  keep = np.zeros(size, bool)
  keep[indices] = True
  return keep


def load(name: str, tfds_name: str, split: str, *, data_dir: str,
         **options) -> EpochIterator:
  """`iterate` over a standard dataset, prepared first if it can be."""
  import_tensorflow(name)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  prepare(builder, name, tfds_name)
  return iterate(builder, split, name=name, **options)


def labels(name: str, tfds_name: str, split: str, *,
           data_dir: str) -> np.ndarray:
  """The int32 labels of a standard dataset's split in row order (`_row`),
  read from the raw records without decoding an image."""
  import_tensorflow(name)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  prepare(builder, name, tfds_name)
  data = builder.as_dataset(
      split=split, read_config=tfds.ReadConfig(add_tfds_id=True),
      decoders={"image": tfds.decode.SkipDecoding()})
  data = data.map(lambda example: {"tfds_id": example["tfds_id"],
                                   "label": example["label"]}).batch(4096)
  offsets = _shard_offsets(builder)
  result = np.full(builder.info.splits[split].num_examples, -1, np.int32)
  for batch in tfds.as_numpy(data):
    rows = [_row(offsets, tfds_id) for tfds_id in batch["tfds_id"]]
    result[rows] = batch["label"]
  return result
