"""Class-balanced P×K batches for supervised metric learning.

Hermans, Beyer and Leibe ("In Defense of the Triplet Loss for Person
Re-Identification", 2017, sec. 3.2) sample each batch as P random classes
and K random images of each, so every anchor has K − 1 positives and
(P − 1)·K negatives in the batch; batch-hard mining, N-pair (Sohn 2016: K =
2) and the lifted structure all rely on such batches.

Batch k of the global stream is a pure function of (seed, k): its P classes
are drawn without replacement from the classes present in `labels`, then K
examples of each class without replacement (with replacement for a class of
fewer than K examples). The batch is laid out class by class,

    [c_1 × K, c_2 × K, ..., c_P × K],

which `ssljax.methods.metric` reshapes to [P, K, ...] for its pair losses.
Images decoded on the host are cropped with generators keyed by (seed, k,
row of the example in the global batch, view), so an example drawn twice in
a batch gets different crops.
Process i of P_n takes rows [i·b, (i+1)·b) of the global batch (b = P·K /
P_n), so the concatenation of the processes' batches is the global batch
(`to_global_array`), and the iterator state, the next batch index, means
the same position on every process.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Callable, Sequence

import numpy as np

from ssljax.data import _examples
from ssljax.data import _pipeline


def _check_sizes(labels: np.ndarray, classes_per_batch: int,
                 samples_per_class: int, fn: str) -> None:
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{fn}: `labels` must be a 1-D integer array [N], got "
                     f"{labels.dtype} of shape {labels.shape}.")
  for name, value in (("classes_per_batch", classes_per_batch),
                      ("samples_per_class", samples_per_class)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{fn}: `{name}` must be a positive int, got "
                       f"{value!r}.")
  num_classes = np.unique(labels).size
  if classes_per_batch > num_classes:
    raise ValueError(f"{fn}: `classes_per_batch` = {classes_per_batch} is "
                     f"more than the {num_classes} classes in `labels`.")


def balanced_indices(labels: Sequence[int], *, classes_per_batch: int,
                     samples_per_class: int, seed: int, index: int
                     ) -> np.ndarray:
  """Dataset indices [P·K] of global batch `index`, class by class.

  Args:
    labels: [N] integer label of every example of the dataset.
    classes_per_batch: P, classes per batch (at most the number of classes).
    samples_per_class: K, examples per class.
    seed: seed of the stream.
    index: batch number k >= 0.

  Returns:
    int64 [P·K]: rows [j·K, (j+1)·K) are K examples of the j-th class drawn.

  Example:
    >>> labels = [0, 0, 0, 1, 1, 2, 2, 2]
    >>> idx = balanced_indices(labels, classes_per_batch=2,
    ...                        samples_per_class=2, seed=0, index=0)
    >>> groups = [sorted({labels[i] for i in idx[j:j + 2]}) for j in (0, 2)]
    >>> print(len(idx), [len(g) for g in groups])
    4 [1, 1]
  """
  labels = np.asarray(labels)
  _check_sizes(labels, classes_per_batch, samples_per_class,
               "balanced_indices")
  rng = np.random.default_rng((seed, index))
  classes = rng.choice(np.unique(labels), classes_per_batch, replace=False)
  return np.concatenate([
      rng.choice(members, samples_per_class,
                 replace=members.size < samples_per_class)
      for members in (np.flatnonzero(labels == c) for c in classes)])


class BalancedBatches:
  """Endless iterator of this process's slices of P×K global batches.

  Yields `{"image": uint8 [b, H, W, C], "label": int32 [b], "index": int32
  [b]}` (`index`: rows of `source`) read from a random-access `source`, b =
  P·K / process_count; with a host decoder, the images are decoded as in
  `pipeline` ("crops" or "image"). `get_state()` is `{"next_index": k}`
  (JSON-able) and `set_state` restores it exactly: batches depend only on
  (seed, k). Build it with `balanced`.
  """

  def __init__(self, source: Sequence[dict], labels: np.ndarray, *,
               classes_per_batch: int, samples_per_class: int, seed: int,
               process_index: int, process_count: int,
               decoder: _examples.HostDecoder | None = None,
               num_threads: int = 4):
    self._source = source
    self._labels = labels
    self._sizes = dict(classes_per_batch=classes_per_batch,
                       samples_per_class=samples_per_class)
    self._seed = seed
    local = classes_per_batch * samples_per_class // process_count
    self._rows = slice(process_index * local, (process_index + 1) * local)
    self._decoder = decoder
    self._pool = None if decoder is None else \
        futures.ThreadPoolExecutor(num_threads)
    self._next = 0

  def __iter__(self) -> "BalancedBatches":
    return self

  def __next__(self) -> dict[str, Any]:
    indices = balanced_indices(self._labels, seed=self._seed,
                               index=self._next, **self._sizes)
    rows = range(len(indices))[self._rows]
    batch = self._next
    self._next += 1
    if self._decoder is None:
      examples = [_examples.fixed_example(int(indices[r]),
                                          self._source[int(indices[r])])
                  for r in rows]
    else:
      examples = list(self._pool.map(
          lambda r: _examples.decoded_example(
              self._decoder, int(indices[r]), self._source[int(indices[r])],
              draw=(batch, r), source=self._source, labels=self._labels),
          rows))
    return _examples.stack(examples)

  def get_state(self) -> dict[str, Any]:
    return {"next_index": self._next}

  def set_state(self, state: dict[str, Any]) -> None:
    self._next = int(state["next_index"])


def balanced(source: Sequence[dict], *, classes_per_batch: int,
             samples_per_class: int, seed: int = 0,
             labels: Sequence[int] | None = None,
             process_index: int | None = None,
             process_count: int | None = None,
             image_size: int | None = None,
             crops: Sequence[Any] | None = None, dct_scaling: bool = True,
             num_threads: int = 4,
             describe: Callable[[int], str] | None = None):
  """P×K class-balanced batches of a random-access source (see module doc).

  Args:
    source: sequence of `{"image": ..., "label": int}` records (a tfds data
      source, a list...): uint8 [H, W, C] images, or encoded ones with
      `image_size`.
    classes_per_batch: P.
    samples_per_class: K; the global batch is P·K, which must divide among
      the processes.
    seed: seed of the stream.
    labels: [N] labels of `source`, if known; read from it otherwise (one
      pass over the records).
    process_index, process_count: this process and the process count
      (default: JAX's).
    image_size, crops, dct_scaling, describe: decode encoded images on the
      host, in `num_threads` threads, as `ssljax.data.pipeline` does.

  Returns:
    A `BalancedBatches` iterator (wrapped in a `HostDecodedBatches` that
    counts unreadable images when they are decoded), usable as
    `ssljax.train.train`'s `data`.

  Example:
    >>> import numpy as np
    >>> records = [{"image": np.zeros((2, 2, 1), np.uint8), "label": i % 3}
    ...            for i in range(12)]
    >>> it = balanced(records, classes_per_batch=2, samples_per_class=3,
    ...               process_index=0, process_count=1)
    >>> batch = next(it)
    >>> print(batch["image"].shape, np.unique(batch["label"][:3]).size,
    ...       it.get_state())
    (6, 2, 2, 1) 1 {'next_index': 1}
  """
  fn = "balanced"
  if labels is None:
    labels = [int(source[i]["label"]) for i in range(len(source))]
  labels = np.asarray(labels)
  _check_sizes(labels, classes_per_batch, samples_per_class, fn)
  if labels.shape[0] != len(source):
    raise ValueError(f"{fn}: `labels` must have one entry per record of "
                     f"`source` ({len(source)}), got {labels.shape[0]}.")
  index, count, _ = _pipeline.process_slice(
      classes_per_batch * samples_per_class, process_index, process_count, fn)
  decoder = None if image_size is None else _pipeline.host_decoder(
      image_size, crops, seed, dct_scaling, fn)
  batches = BalancedBatches(
      source, labels, classes_per_batch=classes_per_batch,
      samples_per_class=samples_per_class, seed=seed, process_index=index,
      process_count=count, decoder=decoder, num_threads=num_threads)
  if decoder is None:
    return batches
  return _pipeline.HostDecodedBatches(batches,
                                      describe or (lambda i: f"record {i}"))
