"""Image folders and ArrayRecord datasets of variable-size images, decoded on
the host: layouts, modes, unreadable files, errors, exact resume, process
counts, worker processes, balanced batches and folder statistics."""

import io
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import common, simclr
from ssljax import data
from ssljax.data import _datasets
from ssljax.data import _examples
from ssljax.data import _folder
from _pictures import KINDS, make_folder, picture, save_picture

SIZE = 16      # evaluation side in these tests
VIEWS = [data.augment.ViewSpec(size=12), data.augment.ViewSpec(size=12),
         data.augment.ViewSpec(size=8, scale=(0.05, 0.4))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = make_folder(tmp_path_factory.mktemp("pictures"))
  # Unreadable: a truncated JPEG and text named .jpg; ignored: a README.
  dog = os.path.join(root, "train", "dog")
  with open(os.path.join(dog, "00.jpg"), "rb") as f:
    head = f.read(300)
  with open(os.path.join(dog, "10_truncated.jpg"), "wb") as f:
    f.write(head)
  with open(os.path.join(dog, "11_not_an_image.jpg"), "w") as f:
    f.write("<html>404</html>")
  with open(os.path.join(root, "train", "cat", "README.txt"), "w") as f:
    f.write("not a picture")
  return root


UNREADABLE = ("10_truncated.jpg", "11_not_an_image.jpg")


def _load(path, split="train", **kwargs):
  options = dict(batch_size=4, seed=3, crops=VIEWS, image_size=SIZE)
  options.update(kwargs)
  return data.load("imagefolder", split, path=path, **options)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    for x, y in zip(np.atleast_1d(a[key]) if key != "crops" else a[key],
                    np.atleast_1d(b[key]) if key != "crops" else b[key]):
      np.testing.assert_array_equal(x, y)


def test_info_scans_classes_and_sizes(folder):
  meta = data.info("imagefolder", path=folder)
  assert meta.variable_size and meta.labelled
  assert meta.image_shape == (224, 224, 3)
  assert (meta.num_classes, meta.num_train, meta.num_test) == (3, 20, 6)
  assert meta.mean == data.augment.IMAGENET_MEAN
  assert data.info("imagefolder", path=folder,
                   image_size=96).image_shape == (96, 96, 3)
  scanned = _folder.scan(folder, "train")
  assert scanned.classes == ("cat", "dog", "eel")
  assert np.bincount(scanned.labels).tolist() == [6, 8, 6]
  assert all(not p.endswith(".txt") for p in scanned.paths)


def test_views_labels_and_unreadable_files(folder, caplog):
  scanned = _folder.scan(folder, "train")
  it = _load(folder, batch_size=5, num_epochs=1, shuffle=False)
  with caplog.at_level(logging.WARNING):
    batches = list(it)
  assert len(batches) == 4
  seen = []
  for batch in batches:
    assert set(batch) == {"crops", "label", "index"}
    assert [c.shape for c in batch["crops"]] == [(5, 12, 12, 3)] * 2 + \
        [(5, 8, 8, 3)]
    assert all(c.dtype == np.uint8 for c in batch["crops"])
    np.testing.assert_array_equal(batch["label"],
                                  scanned.labels[batch["index"]])
    seen += batch["index"].tolist()
  # The two unreadable dog pictures (rows 12, 13) are replaced by the next
  # readable dog, row 6 (wrapping within the class): batches keep their size.
  names = [os.path.basename(p) for p in scanned.paths]
  bad = [names.index(n) for n in UNREADABLE]
  assert bad == [12, 13] and seen.count(6) == 3
  assert sorted(set(seen)) == sorted(set(range(20)) - set(bad))
  assert [os.path.basename(p) for p in it.unreadable] == list(UNREADABLE)
  (line,) = [r.getMessage() for r in caplog.records
             if "unreadable" in r.getMessage()]
  assert "2 unreadable" in line and all(n in line for n in UNREADABLE)


def test_evaluation_images_on_val(folder):
  (batch,) = list(_load(folder, "val", batch_size=6, num_epochs=1,
                        shuffle=False, drop_remainder=False, crops=None))
  assert batch["image"].shape == (6, SIZE, SIZE, 3)
  assert batch["index"].tolist() == list(range(6))
  assert batch["label"].tolist() == [0, 0, 1, 1, 2, 2]
  # "test" is val/ too.
  test = next(_load(folder, "test", batch_size=6, crops=None, shuffle=False))
  np.testing.assert_array_equal(test["image"], batch["image"])


def test_plain_images_are_unlabelled(tmp_path):
  for i in range(5):
    save_picture(str(tmp_path / "train" / f"{i}.png"), i, KINDS[i])
  meta = data.info("imagefolder", path=str(tmp_path))
  assert not meta.labelled and meta.num_classes == 0 and meta.num_test == 0
  batch = next(_load(str(tmp_path), batch_size=5))
  assert batch["label"].tolist() == [-1] * 5
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "val")):
    _load(str(tmp_path), "val")


def test_resume_is_exact(folder):
  straight = _take(_load(folder, batch_size=6), 9)   # 3 epochs and more
  it = _load(folder, batch_size=6)
  _take(it, 4)
  state = json.loads(json.dumps(it.get_state()))
  resumed = _load(folder, batch_size=6)
  resumed.set_state(state)
  for want, got in zip(straight[4:], _take(resumed, 5)):
    _assert_same(want, got)


def test_epochs_give_new_crops_and_orders(folder):
  first, second = _take(_load(folder, batch_size=20, shuffle=False), 2)
  np.testing.assert_array_equal(first["index"], second["index"])
  assert not np.array_equal(first["crops"][0], second["crops"][0])
  other = next(_load(folder, batch_size=20, seed=4))
  assert not np.array_equal(other["index"], first["index"])


@pytest.mark.parametrize("resume_at", [None, 3])
def test_processes_concatenate_to_the_single_process_batches(folder,
                                                             resume_at):
  def batches(count, index):
    def make():
      return _load(folder, batch_size=8, process_index=index,
                   process_count=count)
    it = make()
    if resume_at:
      _take(it, resume_at)
      state = it.get_state()
      it = make()
      it.set_state(state)
    return _take(it, 6)
  skip = resume_at or 0
  single = _take(_load(folder, batch_size=8), 6 + skip)[skip:]
  for count in (2, 4):
    parts = [batches(count, p) for p in range(count)]
    for k, whole in enumerate(single):
      for key in ("label", "index"):
        np.testing.assert_array_equal(
            np.concatenate([part[k][key] for part in parts]), whole[key])
      for v in range(len(VIEWS)):
        np.testing.assert_array_equal(
            np.concatenate([part[k]["crops"][v] for part in parts]),
            whole["crops"][v])


def test_worker_processes_give_the_same_batches_and_state(folder):
  threads = _take(_load(folder, batch_size=6), 5)
  it = _load(folder, batch_size=6, num_workers=2)
  try:
    got = _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
  finally:
    it.close()
  resumed = _load(folder, batch_size=6, num_workers=2)
  try:
    resumed.set_state(state)
    got += _take(resumed, 3)
  finally:
    resumed.close()
  for want, have in zip(threads, got):
    _assert_same(want, have)


def test_balanced_batches_on_a_folder(folder):
  def parts(count):
    return [next(_load(folder, batch_size=6, classes_per_batch=3,
                       process_index=p, process_count=count))
            for p in range(count)]
  (whole,), halves = parts(1), parts(2)
  labels = whole["label"].reshape(3, 2)
  assert (labels == labels[:, :1]).all() and len(set(labels[:, 0])) == 3
  np.testing.assert_array_equal(
      np.concatenate([h["crops"][0] for h in halves]), whole["crops"][0])


def test_folder_stats_match_numpy_over_the_evaluation_crops(folder,
                                                            tmp_path):
  mean, std = data.folder_stats(folder, image_size=SIZE)
  (batch,) = list(_load(folder, batch_size=20, crops=None, shuffle=False,
                        num_epochs=1))
  readable = np.unique(batch["index"], return_index=True)[1]
  pixels = batch["image"][readable].reshape(-1, 3) / 255
  np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, pixels.std(0), rtol=1e-6)
  some = data.folder_stats(folder, image_size=SIZE, num_images=4)
  assert some == data.folder_stats(folder, image_size=SIZE, num_images=4)
  assert some != (mean, std)


def test_each_process_decodes_only_its_rows(folder, monkeypatch):
  """Over one epoch, a process of 2 decodes exactly the pictures it yields
  (its half of each global batch), never the other process's."""
  decoded = []
  original = _examples.HostDecoder.__call__

  def counting(self, data_, draw):
    views = original(self, data_, draw)
    decoded.append(draw)  # After a successful decode only.
    return views

  monkeypatch.setattr(_examples.HostDecoder, "__call__", counting)
  yielded = {}
  for count in (1, 2):
    decoded.clear()
    batches = list(_load(folder, batch_size=8, num_epochs=1,
                         process_index=0, process_count=count))
    yielded[count] = sum(len(b["label"]) for b in batches)
    assert len(decoded) == yielded[count], count
  assert yielded[2] * 2 == yielded[1]


def test_compute_stats_normalises_with_the_folders_statistics(folder):
  """`dataset.compute_stats=True` puts the folder's mean and std into the
  dataset and the method's normalisation; without it ImageNet's stay."""
  base = f"imagefolder,dataset.path='{folder}',dataset.image_size={SIZE}"
  plain = simclr.get_config(base)
  common.resolve_dataset(plain)
  assert tuple(plain.method.augment.mean) == tuple(plain.dataset.mean) == (
      tuple(common.dataset_fields("imagefolder")["mean"]))
  config = simclr.get_config(base + ",dataset.compute_stats=True")
  common.resolve_dataset(config)
  mean, std = data.folder_stats(folder, image_size=SIZE)
  np.testing.assert_allclose(config.dataset.mean, mean)
  np.testing.assert_allclose(config.dataset.std, std)
  np.testing.assert_allclose(config.method.augment.mean, mean)
  np.testing.assert_allclose(config.method.augment.std, std)
  assert not np.allclose(mean, plain.dataset.mean, atol=1e-3)


def test_folder_errors_name_the_path(folder, tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
    data.info("imagefolder", path=str(tmp_path))
  (tmp_path / "train").mkdir()
  with pytest.raises(ValueError, match=f"{tmp_path / 'train'} holds no image"):
    _load(str(tmp_path))
  (tmp_path / "train" / "cat").mkdir()
  save_picture(str(tmp_path / "train" / "loose.jpg"), 0, "rgb")
  with pytest.raises(ValueError, match="both class subfolders"):
    _load(str(tmp_path))
  os.remove(tmp_path / "train" / "loose.jpg")
  save_picture(str(tmp_path / "train" / "cat" / "a.jpg"), 0, "rgb")
  (tmp_path / "train" / "dog").mkdir()
  (tmp_path / "train" / "dog" / "notes.txt").write_text("no picture")
  with pytest.raises(ValueError, match=r"\['dog'\] .* hold no image"):
    data.info("imagefolder", path=str(tmp_path))
  assert (tmp_path / "train" / "dog" / "notes.txt").exists()
  shutil.rmtree(tmp_path / "train" / "dog")
  save_picture(str(tmp_path / "val" / "cow" / "a.jpg"), 1, "rgb")
  with pytest.raises(ValueError, match=r"\['cow'\]"):
    data.info("imagefolder", path=str(tmp_path))
  with pytest.raises(ValueError, match="`path`"):
    data.info("imagefolder")
  with pytest.raises(ValueError, match="`path`"):
    data.load("mnist5k", "train", batch_size=8, path=folder)
  with pytest.raises(ValueError, match="`split`"):
    _load(folder, "validation")
  with pytest.raises(ValueError, match="image_size"):
    _load(folder, image_size=0)
  with pytest.raises(ValueError, match="seed"):
    _load(folder, seed=-1)
  with pytest.raises(ValueError, match="num_workers"):
    _load(folder, num_workers=-1)


# ------------------------------------------- ArrayRecord, without TF ---


class SsljaxVariableJpegs(tfds.core.GeneratorBasedBuilder):
  """Variable-size JPEGs as imagenet2012 stores them (`tfds.features.Image`),
  label i % 3."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(13):
      buffer = io.BytesIO()
      Image.fromarray(picture(20 + 3 * i, 50 - 2 * i, i)).save(buffer,
                                                                "JPEG")
      yield i, {"image": buffer.getvalue(), "label": i % 3}


@pytest.fixture(scope="module")
def jpeg_builder(tmp_path_factory):
  builder = SsljaxVariableJpegs(
      data_dir=str(tmp_path_factory.mktemp("tfds")),
      file_format="array_record")
  builder.download_and_prepare()
  return builder


def test_array_record_images_are_cropped_on_the_host(jpeg_builder):
  source = _datasets.array_record_source(jpeg_builder, "train")
  assert isinstance(source[0]["image"], bytes)

  def run(count, index):
    return _take(data.pipeline(source, batch_size=4, seed=1, image_size=SIZE,
                               crops=VIEWS, process_index=index,
                               process_count=count), 7)
  single = run(1, 0)
  parts = [run(2, p) for p in range(2)]
  for k, whole in enumerate(single):
    assert [c.shape[1] for c in whole["crops"]] == [12, 12, 8]
    np.testing.assert_array_equal(
        whole["label"], [source[i]["label"] for i in whole["index"]])
    np.testing.assert_array_equal(
        np.concatenate([p[k]["crops"][2] for p in parts]), whole["crops"][2])


def test_array_record_reads_and_decodes_in_workers_without_tensorflow(
    jpeg_builder):
  """In a fresh interpreter: TensorFlow is never imported, and grain's
  worker processes decode."""
  script = f"""
import sys
import tensorflow_datasets as tfds
from ssljax import data
from ssljax.data import _datasets
builder = tfds.builder_from_directory({jpeg_builder.data_dir!r})
source = _datasets.array_record_source(builder, "train")
it = data.pipeline(source, batch_size=4, image_size=16, num_workers=2,
                   crops=[data.augment.ViewSpec(size=8)])
batch = next(it)
it.close()
print(batch["crops"][0].shape, "tensorflow" in sys.modules)
"""
  out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                       text=True, timeout=300, check=True)
  assert out.stdout.strip().splitlines()[-1] == "(4, 8, 8, 3) False"
