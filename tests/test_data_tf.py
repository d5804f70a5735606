"""Tests for the tf.data path of the standard datasets (the `tf` extra).

The error paths run everywhere; the pipeline tests need TensorFlow and read
small tfrecord datasets written with tfds here.
"""

import itertools
import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssljax import data
from ssljax.data import _tf

N = 37


def test_without_tensorflow_the_error_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails
  with pytest.raises(ImportError, match=r"pip install 'ssljax\[tf\]'"):
    data.load("cifar10", "train", batch_size=8)


@pytest.mark.parametrize("name,extra", [
    ("cifar10", "tfds build cifar10 --data_dir="),
    ("imagenette", "tfds build imagenette/320px-v2 --data_dir="),
    ("imagenet2012", "ILSVRC2012_img_train.tar"),
])
def test_unprepared_dataset_that_cannot_download_says_how_to_prepare(
    name, extra, monkeypatch, tmp_path):
  def no_network(self, *args, **kwargs):
    raise ConnectionError("network unreachable")
  monkeypatch.setattr(_tf, "import_tensorflow", lambda name: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      no_network)
  with pytest.raises(RuntimeError, match="not prepared") as error:
    data.load(name, "train", batch_size=8, data_dir=str(tmp_path))
  message = str(error.value)
  assert extra in message and str(tmp_path) in message
  assert "network unreachable" in message


def test_standard_dataset_infos():
  cifar = data.info("cifar10")
  assert cifar.image_shape == (32, 32, 3) and cifar.num_train == 50_000
  assert data.info("cifar100").num_classes == 100
  assert data.info("stl10").image_shape == (96, 96, 3)
  imagenet = data.info("imagenet2012")
  assert imagenet.test_split == "validation" and imagenet.num_test == 50_000
  assert data.info("imagenette").tfds_name == "imagenette/320px-v2"


# ------------------------------------------------- with TensorFlow only ---


class SsljaxTfFixed(tfds.core.GeneratorBasedBuilder):
  """Record i: a 6x6x3 PNG filled with i, class label i % 10."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 6, 3)),
            "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(N):
      yield i, {"image": np.full((6, 6, 3), i, np.uint8), "label": i % 10}


class SsljaxTfVariable(tfds.core.GeneratorBasedBuilder):
  """Images of varying sizes whose pixel value is the row index."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    rows = np.arange(16, dtype=np.uint8)[:, None, None]
    yield 0, {"image": np.broadcast_to(rows, (16, 8, 3)).copy(), "label": 0}
    yield 1, {"image": np.full((12, 20, 3), 200, np.uint8), "label": 1}


@pytest.fixture(scope="module")
def tf_builders(tmp_path_factory):
  # The test command installs the `tf` extra; a missing TensorFlow fails here
  # rather than skipping the tf.data path unseen.
  import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
  root = str(tmp_path_factory.mktemp("tfds"))
  builders = SsljaxTfFixed(data_dir=root), SsljaxTfVariable(data_dir=root)
  for builder in builders:
    builder.download_and_prepare()
  return builders


def run(builder, *, batch_size=4, seed=0, num_epochs=None, shuffle=True,
        drop_remainder=True, process_index=0, process_count=1, **host):
  return _tf.iterate(builder, "train", batch_size=batch_size, seed=seed,
                     shuffle=shuffle, num_epochs=num_epochs,
                     drop_remainder=drop_remainder,
                     process_index=process_index, process_count=process_count,
                     name="test", **host)


def values(iterator, batches=None):
  """First pixel (= record index) of each image, per batch."""
  out = []
  for batch in itertools.islice(iterator, batches):
    assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
    first_pixel = batch["image"][:, 0, 0, 0]
    np.testing.assert_array_equal(batch["label"], first_pixel % 10)
    out.append(batch["image"][:, 0, 0, 0].tolist())
  return out


def test_tf_processes_cover_each_epoch_exactly_once(tf_builders):
  fixed, _ = tf_builders
  seen = []
  for p in range(2):
    epochs = values(run(fixed, batch_size=6, num_epochs=2, seed=1,
                        drop_remainder=False, process_index=p, process_count=2))
    seen += [x for batch in epochs for x in batch]
  assert sorted(seen) == sorted(list(range(N)) * 2)


def test_tf_index_is_the_row_of_the_record_in_its_split(tf_builders):
  fixed, _ = tf_builders
  record_at = {}  # index -> first pixel, which names the record
  for p in range(2):
    for batch in run(fixed, batch_size=6, num_epochs=2, seed=3,
                     drop_remainder=False, process_index=p, process_count=2):
      assert batch["index"].dtype == np.int32
      for index, pixel in zip(batch["index"].tolist(),
                              batch["image"][:, 0, 0, 0].tolist()):
        assert record_at.setdefault(index, pixel) == pixel
  assert sorted(record_at) == list(range(N))
  (unshuffled,) = run(fixed, batch_size=N, num_epochs=1, shuffle=False)
  assert unshuffled["index"].tolist() == list(range(N))


def test_tf_epochs_reshuffle_and_seed_is_deterministic(tf_builders):
  fixed, _ = tf_builders
  first, second = values(run(fixed, batch_size=N, num_epochs=2, seed=3))
  assert sorted(first) == sorted(second) == list(range(N))
  assert first != second
  assert values(run(fixed, seed=3), 12) == values(run(fixed, seed=3), 12)
  assert values(run(fixed, seed=3), 12) != values(run(fixed, seed=4), 12)


def test_tf_state_resumes_across_an_epoch_boundary(tf_builders):
  fixed, _ = tf_builders
  straight = values(run(fixed, seed=5), 20)   # 9 full batches per epoch
  it = run(fixed, seed=5)
  values(it, 7)
  state = json.loads(json.dumps(it.get_state()))
  assert state == {"epoch": 0, "batch": 7}
  resumed = run(fixed, seed=5)
  resumed.set_state(state)
  assert values(resumed, 13) == straight[7:]


def test_tf_global_batches_do_not_depend_on_the_process_count(tf_builders):
  fixed, _ = tf_builders
  # Two epochs of full batches; one epoch ending in a partial batch.
  for drop, epochs in ((True, 2), (False, 1)):
    single = values(run(fixed, batch_size=8, seed=2, num_epochs=epochs,
                        drop_remainder=drop))
    for count in (2, 4):
      parts = [values(run(fixed, batch_size=8, seed=2, num_epochs=epochs,
                          drop_remainder=drop, process_index=p,
                          process_count=count)) for p in range(count)]
      # Process p's batch k is rows [p·b, (p+1)·b) of global batch k; a
      # process with no rows in the last, partial batch has one batch less.
      for k, whole in enumerate(single):
        rows = [part[k] for part in parts if k < len(part)]
        assert [x for row in rows for x in row] == whole


def test_tf_resume_with_several_processes(tf_builders):
  fixed, _ = tf_builders
  for p in range(2):
    straight = values(run(fixed, batch_size=6, seed=4, process_index=p,
                          process_count=2), 14)
    it = run(fixed, batch_size=6, seed=4, process_index=p, process_count=2)
    values(it, 8)
    resumed = run(fixed, batch_size=6, seed=4, process_index=p,
                  process_count=2)
    resumed.set_state(it.get_state())
    assert values(resumed, 6) == straight[8:]


def _torchvision_eval(image, size):
  """Resize(round(size / 0.875)) then CenterCrop(size), in PIL, in two steps
  (torchvision's evaluation transform)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  short = round(size / 0.875)
  h, w = image.shape[:2]
  new_h, new_w = (short, int(short * w / h)) if h <= w else \
      (int(short * h / w), short)
  resized = np.asarray(Image.fromarray(image).resize(
      (new_w, new_h), Image.Resampling.BILINEAR))
  top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
  return resized[top:top + size, left:left + size]


def test_tf_variable_sizes_are_decoded_on_the_host(tf_builders):
  _, variable = tf_builders
  (batch,) = list(run(variable, batch_size=2, num_epochs=1, shuffle=False,
                      image_size=8))
  assert batch["image"].shape == (2, 8, 8, 3)
  rows = np.arange(16, dtype=np.uint8)[:, None, None]
  want = {0: _torchvision_eval(np.broadcast_to(rows, (16, 8, 3)).copy(), 8),
          1: np.full((8, 8, 3), 200, np.uint8)}
  for label, image in zip(batch["label"].tolist(), batch["image"]):
    np.testing.assert_allclose(image, want[label], atol=1)
  (cropped,) = list(run(variable, batch_size=2, num_epochs=1, shuffle=False,
                        image_size=8, crops=[data.augment.ViewSpec(size=4)]
                        * 3))
  assert set(cropped) == {"crops", "label", "index"}
  assert [c.shape for c in cropped["crops"]] == [(2, 4, 4, 3)] * 3


def test_tf_epoch_without_a_full_batch_is_an_error(tf_builders):
  fixed, _ = tf_builders
  with pytest.raises(ValueError, match="batch_size"):
    next(run(fixed, batch_size=64))
