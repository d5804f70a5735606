"""Tests for the grain pipeline on a small dataset written with tfds here."""

import itertools
import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec as P

from ssljax import data

N = 37  # records; prime, so no process count or batch divides it


class SsljaxTestRecords(tfds.core.GeneratorBasedBuilder):
  """Record i: a 3x3x1 image filled with i, label i (so labels name records)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(3, 3, 1), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(N):
      yield i, {"image": np.full((3, 3, 1), i, np.uint8), "label": i}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  builder = SsljaxTestRecords(data_dir=str(tmp_path_factory.mktemp("tfds")),
                              file_format="array_record")
  builder.download_and_prepare()
  checked = data.CheckedSource(builder.as_data_source(split="train"))
  _SOURCE_LABELS[:] = [int(checked[i]["label"]) for i in range(N)]
  return checked


_SOURCE_LABELS = []  # label of source[i], filled by the fixture


def labels(iterator, batches=None, *, label_of=None):
  """Labels of the next `batches` batches (all if None); checks the images
  and that `index` is each example's position in `source`, whose record
  with label i is not the i-th (tfds orders records by a hash).
  `label_of[i]`: the label of record i; default the fixture source's."""
  label_of = _SOURCE_LABELS if label_of is None else label_of
  out = []
  for batch in itertools.islice(iterator, batches):
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["label"])
    assert batch["index"].dtype == np.int32
    np.testing.assert_array_equal(
        [label_of[i] for i in batch["index"]], batch["label"])
    out.append(batch["label"].tolist())
  return out


def flat(nested):
  return [x for batch in nested for x in batch]


def test_records_round_trip_through_tfds(source):
  (batch,) = labels(data.pipeline(source, batch_size=N, shuffle=False,
                                  num_epochs=1))
  # tfds stores records in an order fixed by a hash of their keys.
  assert sorted(batch) == list(range(N))
  assert batch == [source[i]["label"] for i in range(N)]


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_processes_cover_every_epoch_exactly_once(source, count):
  epochs = 3
  seen = []
  for p in range(count):
    seen += flat(labels(data.pipeline(
        source, batch_size=2 * count, seed=1, num_epochs=epochs,
        drop_remainder=False, process_index=p, process_count=count)))
  assert sorted(seen) == sorted(list(range(N)) * epochs)


def test_global_batch_is_the_same_for_any_process_count(source):
  single = labels(data.pipeline(source, batch_size=8, seed=2), batches=12)
  for count in (2, 4, 8):
    parts = [labels(data.pipeline(source, batch_size=8, seed=2,
                                  process_index=p, process_count=count),
                    batches=12) for p in range(count)]
    for k in range(12):  # in order: process p holds rows [p·b, (p+1)·b)
      assert flat(part[k] for part in parts) == single[k]


def test_each_epoch_is_a_new_permutation(source):
  first, second = labels(data.pipeline(source, batch_size=N, seed=4,
                                       num_epochs=2))
  assert sorted(first) == sorted(second) == list(range(N))
  assert first != second


def test_seed_determines_the_order(source):
  def run(seed):
    return labels(data.pipeline(source, batch_size=4, seed=seed), batches=20)
  assert run(7) == run(7)
  assert run(7) != run(8)


def test_state_restores_the_position_in_every_process(source):
  def run(p):
    return data.pipeline(source, batch_size=6, seed=5, process_index=p,
                         process_count=3)
  for p in range(3):
    straight = labels(run(p), batches=20)
    it = run(p)
    labels(it, batches=9)
    state = json.loads(json.dumps(it.get_state()))
    resumed = run(p)
    resumed.set_state(state)
    assert labels(resumed, batches=11) == straight[9:]


def test_drop_remainder_and_finite_epochs(source):
  kept = labels(data.pipeline(source, batch_size=10, shuffle=False,
                              num_epochs=1, drop_remainder=True))
  assert [len(b) for b in kept] == [10, 10, 10]
  short = labels(data.pipeline(source, batch_size=10, shuffle=False,
                               num_epochs=1, drop_remainder=False))
  assert [len(b) for b in short] == [10, 10, 10, 7]


def test_plain_list_source_and_bad_records():
  records = [{"image": np.full((2, 2, 3), i, np.uint8), "label": i}
             for i in range(4)]
  assert labels(data.pipeline(records, batch_size=2, shuffle=False,
                              num_epochs=1),
                label_of=range(4)) == [[0, 1], [2, 3]]
  floats = [{"image": np.zeros((2, 2, 3), np.float32), "label": 0}]
  with pytest.raises(ValueError, match="uint8"):
    next(data.pipeline(floats, batch_size=1))
  flat_images = [{"image": np.zeros((4,), np.uint8), "label": 0}]
  with pytest.raises(ValueError, match="image"):
    next(data.pipeline(flat_images, batch_size=1))
  with pytest.raises(ValueError, match="source"):
    data.pipeline([], batch_size=1)


def _mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def test_to_global_array_places_the_batch_on_the_data_sharding(source):
  sharding = NamedSharding(_mesh(), P("data"))
  batch = next(data.pipeline(source, batch_size=16, seed=0))
  placed = data.to_global_array(batch, sharding)
  for key in ("image", "label"):
    assert placed[key].sharding == sharding
    np.testing.assert_array_equal(placed[key], batch[key])
  assert placed["image"].dtype == np.uint8
  shard_rows = [s.data.shape[0] for s in placed["image"].addressable_shards]
  assert shard_rows == [2] * 8


def test_device_prefetch_state_is_that_of_the_last_returned_batch(source):
  sharding = NamedSharding(_mesh(), P("data"))
  straight = labels(data.pipeline(source, batch_size=8, seed=6), batches=10)
  it = data.DevicePrefetch(data.pipeline(source, batch_size=8, seed=6),
                           sharding, size=3)
  got = [np.asarray(next(it)["label"]).tolist() for _ in range(4)]
  assert got == straight[:4]
  state = it.get_state()   # three more batches have been read ahead
  resumed = data.DevicePrefetch(data.pipeline(source, batch_size=8, seed=6),
                                sharding)
  resumed.set_state(state)
  rest = [np.asarray(b["label"]).tolist() for b in itertools.islice(resumed, 6)]
  assert rest == straight[4:]
  finite = data.DevicePrefetch(data.pipeline(
      source, batch_size=8, num_epochs=1, shuffle=False), sharding)
  assert len(list(finite)) == N // 8
  with pytest.raises(ValueError, match="size"):
    data.DevicePrefetch(iter([]), sharding, size=0)
