"""Input pipelines over random-access sources with grain, and device placement.

Order of the global stream: the source is shuffled with `seed` (a new
permutation every epoch, grain's `reseed_each_epoch`), repeated, and cut into
global batches of B elements; process p of P takes the contiguous rows
[p·B/P, (p+1)·B/P) of each (`ProcessRows`). The concatenation of the
processes' batches k (`to_global_array`) is therefore global batch k itself,
the same array in the same order for any number of processes: on-device
views keyed by an example's row in the global batch, and host crops keyed by
(seed, epoch, index, view), do not change with the process count. An epoch
is covered exactly once by all processes together, and an iterator state
(the next batch index) means the same position for every process.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from typing import Any, Callable, Iterator, Sequence

from absl import flags
from absl import logging
import grain
import jax
import numpy as np

from ssljax.data import _examples


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


class ProcessRows(grain.MapDataset):
  """Rows [start, start + local) of every global batch of `global_batch`
  consecutive elements of `parent`: this process's share of each batch.

  With `drop_remainder` a last, partial global batch is left out; otherwise
  this process keeps its rows of it, possibly none.
  """

  def __init__(self, parent: grain.MapDataset, *, global_batch: int,
               start: int, local: int, drop_remainder: bool):
    super().__init__(parent)
    self._global, self._start, self._local = global_batch, start, local
    full, rest = divmod(len(parent), global_batch)
    tail = 0 if drop_remainder else min(max(rest - start, 0), local)
    self._length = full * local + tail

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local)
    return self._parent[batch * self._global + self._start + row]

  def __str__(self) -> str:
    return (f"ProcessRows(global_batch={self._global}, start={self._start}, "
            f"local={self._local})")


class Rows:
  """Records `indices` of `source`, in that order: a subset as a source.

  >>> rows = Rows([{"label": i} for i in range(5)], [4, 1])
  >>> print(len(rows), rows[0], rows.original(1))
  2 {'label': 4} 1
  """

  def __init__(self, source: Sequence[dict], indices: np.ndarray):
    self._source = source
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict:
    return self._source[int(self._indices[index])]

  def original(self, index: int) -> int:
    """The row of `source` behind row `index` of the subset."""
    return int(self._indices[index])


class OriginalIndex:
  """Batches of a `Rows` subset with `index` mapped back to the rows of the
  whole source; `get_state()` / `set_state()` are the wrapped iterator's.
  """

  def __init__(self, iterator, indices: np.ndarray):
    self._iterator = iterator
    self._indices = indices

  def __iter__(self) -> "OriginalIndex":
    return self

  def __next__(self) -> dict[str, Any]:
    batch = dict(next(self._iterator))
    batch["index"] = self._indices[batch["index"]].astype(np.int32)
    return batch

  def get_state(self) -> Any:
    return self._iterator.get_state()

  def set_state(self, state: Any) -> None:
    self._iterator.set_state(state)


class HostDecodedBatches:
  """Batches of host-decoded images; counts and logs unreadable ones.

  Wraps a grain iterator whose examples come from `_examples.decoded_example`:
  drops their `UNREADABLE` entry after noting the records it names (each
  replaced by the next readable one), logs a warning with the count and the
  first few names whenever new ones appear, and keeps them in `unreadable`.
  `get_state()` / `set_state()` are the wrapped iterator's.
  """

  def __init__(self, iterator, describe: Callable[[int], str]):
    self._iterator = iterator
    self._describe = describe
    self._unreadable: set[int] = set()

  def __iter__(self) -> "HostDecodedBatches":
    return self

  def __next__(self) -> dict[str, Any]:
    batch = dict(next(self._iterator))
    rows = batch.pop(_examples.UNREADABLE)
    new = set(rows[rows >= 0].tolist()) - self._unreadable
    if new:
      self._unreadable |= new
      names = self.unreadable
      logging.warning(
          "load: %d unreadable image(s) so far, each replaced by the next "
          "readable one: %s%s", len(names), ", ".join(names[:5]),
          ", ..." if len(names) > 5 else "")
    return batch

  @property
  def unreadable(self) -> tuple[str, ...]:
    """The unreadable records met so far by this process, in source order."""
    return tuple(self._describe(i) for i in sorted(self._unreadable))

  def get_state(self) -> Any:
    return self._iterator.get_state()

  def set_state(self, state: Any) -> None:
    self._iterator.set_state(state)

  def close(self) -> None:
    """Stops grain's worker processes, if any."""
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()


def pipeline(source: Sequence[dict], *, batch_size: int, seed: int = 0,
             shuffle: bool = True, num_epochs: int | None = None,
             drop_remainder: bool = True, process_index: int | None = None,
             process_count: int | None = None,
             image_size: int | None = None,
             crops: Sequence[Any] | None = None, dct_scaling: bool = True,
             num_workers: int = 0, num_threads: int = 4, prefetch: int = 8,
             describe: Callable[[int], str] | None = None,
             labels: Sequence[int] | None = None):
  """Batches of this process's share of a random-access source, with grain.

  `source` is any sequence of `{"image": ..., "label": int}` records (a tfds
  data source, a list...). With `image_size` None the images are uint8
  [H, W, C] arrays and the iterator yields `{"image": uint8 [b, H, W, C],
  "label": int32 [b], "index": int32 [b]}` (`index`: the examples'
  positions in `source`), b = batch_size // process_count. With
  `image_size` = S the images are encoded (JPEG, PNG, WebP... bytes) and
  decoded on the host (`_examples.HostDecoder`): `crops`, a sequence of
  `augment.ViewSpec` (only `size`, `scale` and `ratio` are read), gives
  `{"crops": (uint8 [b, s_v, s_v, 3], ...)}` in view order, boxes drawn from
  the full-resolution image with torchvision's RandomResizedCrop sampler;
  without `crops`, `{"image": uint8 [b, S, S, 3]}`, the shorter side resized
  to round(S / 0.875) and the centre crop. An unreadable image is replaced
  by the next readable record (of its class when `labels`, the [N] labels of
  `source`, are given), counted and logged (`HostDecodedBatches`;
  `describe(i)` names record i there).

  Order: the source is shuffled with `seed` (a new permutation every epoch),
  repeated, and cut into global batches of `batch_size`; process p takes rows
  [p·b, (p+1)·b) of each. The global batch is therefore the same array for
  any process count, an epoch is covered exactly once by all processes
  together, and the iterator state (the next batch) means the same position
  on every process. The crops of an example depend on (seed, epoch, index,
  view) only, so neither the process count, the worker count nor a resume
  changes them.

  `get_state()` (a JSON-able dict) and `set_state()` restore the position
  exactly. `num_epochs=None` repeats forever. Decoding runs in `num_threads`
  threads reading ahead `prefetch` batches, or in `num_workers` grain worker
  processes when positive. With a finite `num_epochs` and
  `drop_remainder=False` the processes' last batches may differ in size (a
  process may get none): multi-host evaluation loops pad them.

  >>> import numpy as np
  >>> records = [{"image": np.full((2, 2, 1), i, np.uint8), "label": i}
  ...            for i in range(6)]
  >>> it = pipeline(records, batch_size=4, shuffle=False, num_epochs=1,
  ...               drop_remainder=False, process_index=1, process_count=2)
  >>> [batch["label"].tolist() for batch in it]
  [[2, 3]]
  """
  fn = "pipeline"
  index, count, local_batch = process_slice(batch_size, process_index,
                                            process_count, fn)
  check_num_epochs(num_epochs, fn)
  if len(source) == 0:
    raise ValueError(f"{fn}: `source` is empty.")
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or \
      num_workers < 0:
    raise ValueError(f"{fn}: `num_workers` must be an int >= 0, got "
                     f"{num_workers!r}.")
  # Numbered before the shuffle; grain numbers lazily, by the index asked of
  # the repeated dataset, hence the modulo.
  size = len(source)
  data = grain.MapDataset.source(source).map_with_index(
      lambda i, record: (i % size, record))
  if shuffle:
    data = data.shuffle(seed=seed)
  data = data.repeat(num_epochs)
  if image_size is None:
    data = data.map(lambda tagged: _examples.fixed_example(*tagged))
  else:
    decoder = host_decoder(image_size, crops, seed, dct_scaling, fn)
    labels = None if labels is None else np.asarray(labels)
    # Position g of the repeated stream is in epoch g // size.
    data = data.map_with_index(lambda g, tagged: _examples.decoded_example(
        decoder, *tagged, draw=(g // size, tagged[0]), source=source,
        labels=labels))
  data = ProcessRows(data, global_batch=batch_size,
                     start=index * local_batch, local=local_batch,
                     drop_remainder=drop_remainder)
  data = data.batch(local_batch, drop_remainder=drop_remainder)
  batches = data.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers:
    if not flags.FLAGS.is_parsed():
      # grain's workers read absl flags; outside an absl app (notebooks,
      # tests) they are unparsed: use their defaults.
      flags.FLAGS.mark_as_parsed()
    batches = batches.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers))
  if image_size is None:
    return iter(batches)
  return HostDecodedBatches(iter(batches),
                            describe or (lambda i: f"record {i}"))


def host_decoder(image_size: int, crops: Sequence[Any] | None, seed: int,
                 dct_scaling: bool, fn: str) -> _examples.HostDecoder:
  """A checked `_examples.HostDecoder`."""
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f"{fn}: `seed` must be an int >= 0 when images are "
                     f"decoded on the host, got {seed!r}.")
  return _examples.HostDecoder(
      image_size=_examples.check_size(image_size, "image_size", fn),
      crops=None if crops is None else _examples.crop_specs(crops, fn),
      seed=seed, dct_scaling=bool(dct_scaling))


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
