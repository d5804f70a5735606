"""Batchable examples from records, for every input pipeline.

Records are `{"image": ..., "label": int}` dicts. Fixed-size datasets (MNIST,
CIFAR) store uint8 arrays, passed on as they are (`fixed_example`); their
views are cropped on the device. Variable-size datasets (ImageNet, image
folders) store encoded images, decoded on the host by a `HostDecoder`
(`decoded_example`):

* with `crops` (one `CropSpec` per view, in view order): each view's
  random-resized-crop box is drawn from the full-resolution picture
  (`_crops.random_box`) and resampled to its size: `{"crops": (uint8 [s_v,
  s_v, 3], ...)}`; the generator of view v is a pure function of (seed,
  draw, v) (`_crops.view_rng`), where `draw` names the example's occurrence
  in the stream (epoch and index);
* without: the evaluation crop (`_crops.eval_box`): `{"image": uint8 [S, S,
  3]}`.

An image that cannot be decoded (corrupt, truncated, empty or not an image)
is replaced by the next readable record of the source (index + 1, + 2, ...,
wrapping; of the same class first when the labels are known), so batches
keep their size and stay a deterministic function of
the files; the example's `label` and `index` are the substitute's, and its
`UNREADABLE` entry the unreadable record's index (-1 when it was read), which
the pipelines count and log (`HostDecodedBatches`) and drop from the batch.
"""

from __future__ import annotations

import itertools
import numbers
from typing import Any, Iterator, NamedTuple, Sequence

import jax
import numpy as np

from ssljax.data import _crops
from ssljax.data import _decode

UNREADABLE = "unreadable"  # batch entry counted and dropped by the pipelines


class CropSpec(NamedTuple):
  """A view's crop on the host: output side, area range, aspect range."""
  size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)


def check_size(size, name: str, fn: str) -> int:
  if isinstance(size, bool) or not isinstance(size, numbers.Integral) or \
      size < 1:
    raise ValueError(f"{fn}: `{name}` must be a positive int, got {size!r}.")
  return int(size)


def crop_specs(crops: Sequence[Any], fn: str) -> tuple[CropSpec, ...]:
  """`CropSpec`s from `augment.ViewSpec`s (only `size`, `scale` and `ratio`
  are read), checked."""
  if isinstance(crops, (str, bytes)) or not isinstance(crops, Sequence) or \
      not crops:
    raise ValueError(f"{fn}: `crops` must be a non-empty sequence of "
                     f"`augment.ViewSpec`, got {crops!r}.")
  specs = []
  for i, spec in enumerate(crops):
    if not all(hasattr(spec, f) for f in CropSpec._fields):
      raise ValueError(f"{fn}: `crops[{i}]` must have `size`, `scale` and "
                       f"`ratio` (an `augment.ViewSpec`), got {spec!r}.")
    specs.append(CropSpec(
        check_size(spec.size, f"crops[{i}].size", fn),
        _crops.check_interval(spec.scale, f"crops[{i}].scale", fn),
        _crops.check_interval(spec.ratio, f"crops[{i}].ratio", fn)))
  return tuple(specs)


def fixed_example(index: int, record: dict) -> dict[str, np.ndarray]:
  """A batchable example of a fixed-size record: its uint8 image and label,
  and its `index` in the source (the row of the example in dataset-level
  arrays such as the pseudo-labels of clustering methods).

  >>> ex = fixed_example(3, {"image": np.zeros((2, 2, 1), np.uint8),
  ...                        "label": 5})
  >>> print(ex["image"].shape, ex["label"], ex["index"])
  (2, 2, 1) 5 3
  """
  image = np.asarray(record["image"])
  if image.ndim != 3 or image.dtype != np.uint8:
    raise ValueError(f"pipeline: records' `image` must be uint8 [H, W, C], "
                     f"got {image.dtype} of shape {image.shape}.")
  return {"image": image, "label": np.asarray(record["label"], np.int32),
          "index": np.asarray(index, np.int32)}


class HostDecoder:
  """Decodes an encoded image into its views or its evaluation crop.

  Args:
    image_size: S, the side of the evaluation crop ("image").
    crops: `CropSpec`s of the views, or None for the evaluation crop.
    seed: seeds the crop boxes (with the draw and the view index).
    dct_scaling: let JPEGs decode at 1/2, 1/4 or 1/8 of their size when
      every box shrinks that much (`_decode.dct_factor`).

  Example:
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (50, 40)).save(buffer, "JPEG")
    >>> decoder = HostDecoder(image_size=16, crops=[CropSpec(8), CropSpec(4)])
    >>> views = decoder(buffer.getvalue(), draw=(0, 0))["crops"]
    >>> [v.shape for v in views]
    [(8, 8, 3), (4, 4, 3)]
    >>> print(HostDecoder(image_size=16)(buffer.getvalue(), (0, 0))[
    ...     "image"].shape)
    (16, 16, 3)
  """

  def __init__(self, *, image_size: int, crops: Sequence[CropSpec] | None
               = None, seed: int = 0, dct_scaling: bool = True):
    self.image_size = image_size
    self.crops = None if crops is None else tuple(crops)
    self.seed = seed
    self.dct_scaling = dct_scaling

  def __call__(self, data: bytes, draw: tuple[int, ...]) -> dict[str, Any]:
    if self.crops is None:
      (image,) = _decode.resized_crops(
          data, lambda h, w: [_crops.eval_box(h, w, self.image_size)],
          [self.image_size], dct_scaling=self.dct_scaling, crop_first=False)
      return {"image": image}

    def boxes(height: int, width: int) -> list[_crops.Box]:
      return [_crops.random_box(_crops.view_rng(self.seed, draw, v), height,
                                width, scale=spec.scale, ratio=spec.ratio)
              for v, spec in enumerate(self.crops)]

    views = _decode.resized_crops(data, boxes, [s.size for s in self.crops],
                                  dct_scaling=self.dct_scaling)
    return {"crops": tuple(views)}


def _substitutes(index: int, size: int, labels: np.ndarray | None
                 ) -> Iterator[int]:
  """Rows after `index` (wrapping): its class's first, if labels are known.
  """
  after = (index + np.arange(1, size)) % size
  if labels is None:
    return iter(after.tolist())
  same = labels[after] == labels[index]
  return itertools.chain(after[same].tolist(), after[~same].tolist())


def decoded_example(decoder: HostDecoder, index: int, record: dict,
                    draw: tuple[int, ...], source: Sequence[dict] | None,
                    labels: np.ndarray | None = None) -> dict[str, Any]:
  """The decoded example of `record` (row `index` of `source`).

  An unreadable image is replaced by the next readable record of `source`
  (see the module docstring), of the same class when `labels` ([N], the
  labels of `source`) are given, so class-balanced batches stay balanced;
  without a `source` (no random access) it is an error naming the record.

  Raises:
    ValueError: if no record of `source` is readable, or `record` is
      unreadable and `source` is None.
  """
  candidates = itertools.chain([index], () if source is None else
                               _substitutes(index, len(source), labels))
  for row in candidates:
    current = record if row == index else source[row]
    try:
      views = decoder(current["image"], draw)
    except _decode.UnreadableImageError as error:
      if source is None:
        raise ValueError(f"record {index}: {error}") from error
      continue
    return {**views, "label": np.asarray(current["label"], np.int32),
            "index": np.asarray(row, np.int32),
            UNREADABLE: np.asarray(-1 if row == index else index, np.int32)}
  raise ValueError(f"none of the {len(source)} images of the source can be "
                   "decoded (corrupt, truncated or not images).")


def stack(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """A batch from examples: every leaf stacked along a new first axis.

  >>> batch = stack([{"crops": (np.zeros((2, 2, 3)),), "label": 1}] * 4)
  >>> print(batch["crops"][0].shape, batch["label"].tolist())
  (4, 2, 2, 3) [1, 1, 1, 1]
  """
  return jax.tree.map(lambda *leaves: np.stack(leaves), *examples)
