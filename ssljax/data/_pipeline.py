"""Input pipelines over random-access sources with grain, and device placement.

Order of the global stream: the source is shuffled with `seed` (a new
permutation every epoch, grain's `reseed_each_epoch`), repeated, and element
i of the repeated stream goes to process i mod P. Batch k of every process
therefore holds elements [k·B, (k+1)·B) of one global stream (B the global
batch), whatever the number of processes: an epoch is covered exactly once by
all processes together, and an iterator state (the next batch index) means
the same position for every process.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np


def process_slice(batch_size: int, process_index: int | None,
                  process_count: int | None, fn: str) -> tuple[int, int, int]:
  """(process_index, process_count, per-process batch) with checked values."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not (isinstance(count, int) and count > 0 and 0 <= index < count):
    raise ValueError(f"{fn}: need 0 <= `process_index` < `process_count`, got "
                     f"{index} and {count}.")
  if not (isinstance(batch_size, int) and batch_size > 0
          and batch_size % count == 0):
    raise ValueError(f"{fn}: `batch_size` must be a positive multiple of the "
                     f"process count {count}, got {batch_size}.")
  return index, count, batch_size // count


def check_num_epochs(num_epochs: int | None, fn: str) -> None:
  if num_epochs is not None and not (isinstance(num_epochs, int)
                                     and num_epochs > 0):
    raise ValueError(f"{fn}: `num_epochs` must be a positive int or None, got "
                     f"{num_epochs}.")


class CheckedSource:
  """A tfds ArrayRecord data source whose read errors name the file.

  array_record reports a truncated or corrupt file without its name; this
  wrapper maps the record index to its file through the split's file
  instructions and re-raises as `OSError` naming it. Construction reads the
  first record of every file, so a truncated file (lost footer) fails at
  once rather than mid-training.

  >>> import tempfile
  >>> from ssljax.data import _datasets
  >>> builder = _datasets.build_mnist5k(tempfile.mkdtemp())
  >>> source = CheckedSource(builder.as_data_source(split="test"))
  >>> print(len(source), source[0]["image"].shape)
  1000 (28, 28, 1)
  """

  def __init__(self, source):
    self._source = source
    instructions = source.dataset_info.splits[source.split].file_instructions
    self._files = [i.filename for i in instructions]
    self._ends = list(itertools.accumulate(i.take for i in instructions))
    for end, instruction in zip(self._ends, instructions):
      if instruction.take:
        _ = self[end - instruction.take]

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Any:
    try:
      return self._source[index]
    except Exception as error:  # array_record raises RuntimeError, tfds others
      if not 0 <= index < len(self):
        raise
      name = self._files[bisect.bisect_right(self._ends, int(index))]
      raise OSError(f"corrupt or truncated ArrayRecord file {name} (record "
                    f"{index} of the split): {error}. Delete the dataset "
                    "folder to rebuild it or prepare it again.") from error


def example(index: int, record: dict) -> dict[str, np.ndarray]:
  """A batchable example: the record's image and label, and its `index` in
  the source (the row of the example in dataset-level arrays such as the
  pseudo-labels of clustering methods)."""
  image = np.asarray(record["image"])
  if image.ndim != 3 or image.dtype != np.uint8:
    raise ValueError(f"pipeline: records' `image` must be uint8 [H, W, C], "
                     f"got {image.dtype} of shape {image.shape}.")
  return {"image": image, "label": np.asarray(record["label"], np.int32),
          "index": np.asarray(index, np.int32)}


def pipeline(source: Sequence[dict], *, batch_size: int, seed: int = 0,
             shuffle: bool = True, num_epochs: int | None = None,
             drop_remainder: bool = True, process_index: int | None = None,
             process_count: int | None = None, num_threads: int = 4,
             prefetch: int = 8) -> grain.DatasetIterator:
  """Batches of this process's share of a random-access source, with grain.

  `source` is any sequence of `{"image": uint8 [H, W, C], "label": int}`
  records (a tfds data source, a list...). The iterator yields
  `{"image": uint8 [b, H, W, C], "label": int32 [b], "index": int32 [b]}`
  (`index`: the examples' positions in `source`) with
  b = batch_size // process_count; `get_state()` (a JSON-able dict) and
  `set_state()` restore its position exactly. `num_epochs=None` repeats
  forever; `num_threads` threads read ahead `prefetch` batches. With a finite
  `num_epochs` and `drop_remainder=False` the last batches of the processes
  may differ in size (or one process may have one batch more): multi-host
  evaluation loops must pad them to a common shape.

  >>> import numpy as np
  >>> records = [{"image": np.full((2, 2, 1), i, np.uint8), "label": i}
  ...            for i in range(6)]
  >>> it = pipeline(records, batch_size=4, shuffle=False, num_epochs=1,
  ...               drop_remainder=False, process_index=1, process_count=2)
  >>> [batch["label"].tolist() for batch in it]
  [[1, 3], [5]]
  """
  fn = "pipeline"
  index, count, local_batch = process_slice(batch_size, process_index,
                                            process_count, fn)
  check_num_epochs(num_epochs, fn)
  if len(source) == 0:
    raise ValueError(f"{fn}: `source` is empty.")
  # Numbered before the shuffle; grain numbers lazily, by the index asked of
  # the repeated dataset, hence the modulo.
  size = len(source)
  data = grain.MapDataset.source(source).map_with_index(
      lambda i, record: example(i % size, record))
  if shuffle:
    data = data.shuffle(seed=seed)
  data = data.repeat(num_epochs)[index::count]
  data = data.batch(local_batch, drop_remainder=drop_remainder)
  options = grain.ReadOptions(num_threads=num_threads,
                              prefetch_buffer_size=prefetch)
  return iter(data.to_iter_dataset(options))


def to_global_array(batch: Any, sharding: jax.sharding.Sharding) -> Any:
  """This process's batch -> global `jax.Array`s laid out by `sharding`.

  Wraps `jax.make_array_from_process_local_data` on every leaf: the global
  batch is the concatenation of all processes' batches along axis 0, so
  `sharding` must split the leading axis only (e.g.
  `NamedSharding(mesh, P("data"))`), the same for images and labels.

  >>> import jax, numpy as np
  >>> from jax.sharding import NamedSharding, PartitionSpec as P
  >>> mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  >>> sharding = NamedSharding(mesh, P("data"))
  >>> x = to_global_array({"label": np.arange(4)}, sharding)
  >>> print(x["label"].shape)
  (4,)
  """
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class DevicePrefetch:
  """Keeps `size` batches already placed on devices ahead of the consumer.

  `jax.make_array_from_process_local_data` copies asynchronously, so
  dispatching the next batches before the current step finishes hides the
  host-to-device transfer. `get_state()` is the wrapped iterator's state after
  the last batch *returned* (not the ones read ahead), so a checkpoint taken
  between steps resumes at the next unseen batch.

  >>> import jax, numpy as np
  >>> from jax.sharding import NamedSharding, PartitionSpec as P
  >>> mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  >>> records = [{"image": np.zeros((2, 2, 1), np.uint8), "label": i}
  ...            for i in range(8)]
  >>> it = DevicePrefetch(pipeline(records, batch_size=2, shuffle=False),
  ...                     NamedSharding(mesh, P("data")))
  >>> print(next(it)["label"], it.get_state())
  [0 1] {'next_index': 1}
  """

  def __init__(self, iterator: Iterator, sharding: jax.sharding.Sharding, *,
               size: int = 2):
    if not (isinstance(size, int) and size > 0):
      raise ValueError(f"DevicePrefetch: `size` must be a positive int, got "
                       f"{size}.")
    self._iterator = iterator
    self._sharding = sharding
    self._size = size
    self._queue: collections.deque = collections.deque()
    self._state = iterator.get_state()

  def __iter__(self) -> "DevicePrefetch":
    return self

  def __next__(self) -> Any:
    while len(self._queue) < self._size:
      try:
        batch = next(self._iterator)
      except StopIteration:
        break
      self._queue.append((to_global_array(batch, self._sharding),
                          self._iterator.get_state()))
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    return batch

  def get_state(self) -> Any:
    return self._state

  def set_state(self, state: Any) -> None:
    self._iterator.set_state(state)
    self._queue.clear()
    self._state = state
