"""Crop boxes in the coordinates of the full-resolution picture (host side).

Images of variable size (ImageNet, a user's folder) are cropped on the host
before they are batched, so that a random-resized crop can cover any part of
the original picture, as in the papers' torchvision pipelines:

* `random_box`: torchvision's `RandomResizedCrop.get_params` (Szegedy et al.
  2015, "Going deeper with convolutions"), area fraction in `scale`,
  log-uniform aspect ratio in `ratio`, 10 attempts, then a centred fallback.
* `eval_box`: torchvision's `Resize(round(S / 0.875))` + `CenterCrop(S)`
  (the standard ImageNet evaluation transform, 256 -> 224) expressed as one
  box of the original, so it is resampled once.
* `view_rng`: the generator of one view, a pure function of (seed, draw,
  view), so crops do not depend on the process count, the worker count or a
  resume.

Boxes are `Box(top, left, height, width)` in pixels of the original image;
`_decode.resized_crops` resamples them.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

ATTEMPTS = 10
# Evaluation resizes the shorter side to side / 0.875 (224 -> 256) and keeps
# the central side × side square.
EVAL_CROP_FRACTION = 0.875


class Box(NamedTuple):
  """A crop of the original picture: top row, left column, height, width."""
  top: float
  left: float
  height: float
  width: float


def check_interval(interval, name: str, fn: str) -> tuple[float, float]:
  """`interval` as (low, high) with 0 < low <= high, or ValueError."""
  try:
    low, high = (float(x) for x in interval)
  except (TypeError, ValueError):
    low = high = float("nan")
  if not 0 < low <= high:
    raise ValueError(f"{fn}: `{name}` must be (low, high) with 0 < low <= "
                     f"high, got {interval!r}.")
  return low, high


def random_box(rng: np.random.Generator, height: int, width: int, *,
               scale: Sequence[float] = (0.08, 1.0),
               ratio: Sequence[float] = (3 / 4, 4 / 3),
               attempts: int = ATTEMPTS) -> Box:
  """A random-resized-crop box of an image of `height` × `width` pixels.

  torchvision's `RandomResizedCrop.get_params`: for each of `attempts`
  draws, area a = H·W·U(scale), aspect r = exp(U(log ratio)), w =
  round(sqrt(a·r)), h = round(sqrt(a / r)); the first box with 0 < w <= W
  and 0 < h <= H is placed at top ~ U{0..H-h}, left ~ U{0..W-w}. If none
  fits, the whole image with its aspect clamped to `ratio`, centred.

  Args:
    rng: the view's generator (see `view_rng`).
    height, width: size of the original image in pixels.
    scale: range of the box area as a fraction of the image area.
    ratio: range of the box aspect ratio width / height.
    attempts: draws before the fallback.

  Returns:
    An integer-valued `Box` inside the image.

  Example:
    >>> box = random_box(np.random.default_rng(0), 375, 500)
    >>> 0 <= box.top <= 375 - box.height and 0 <= box.left <= 500 - box.width
    True
    >>> random_box(np.random.default_rng(0), 10, 100, scale=(1.0, 1.0))
    Box(top=0, left=43, height=10, width=13)
  """
  fn = "random_box"
  scale = check_interval(scale, "scale", fn)
  ratio = check_interval(ratio, "ratio", fn)
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = round(math.sqrt(target_area * aspect))
    h = round(math.sqrt(target_area / aspect))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return Box(top, left, h, w)
  aspect_in = width / height
  if aspect_in < ratio[0]:
    w, h = width, round(width / ratio[0])
  elif aspect_in > ratio[1]:
    w, h = round(height * ratio[1]), height
  else:
    w, h = width, height
  return Box((height - h) // 2, (width - w) // 2, h, w)


def eval_size(size: int) -> int:
  """The shorter side before the centre crop: round(size / 0.875).

  >>> eval_size(224), eval_size(32)
  (256, 37)
  """
  return round(size / EVAL_CROP_FRACTION)


def eval_box(height: int, width: int, size: int) -> Box:
  """The central `size` × `size` crop after resizing the shorter side to
  `eval_size(size)`, as a box of the original image.

  torchvision's `Resize(R)` makes the shorter side R and the longer one
  int(R · long / short); `CenterCrop(size)` then starts at
  int(round((R - size) / 2)) (and likewise along the longer side). Dividing
  those pixel positions by the resize factors gives the box in the original,
  which one resampling to size × size turns into the same pixels as resizing
  the whole image and cropping.

  Example (375 × 500 -> 256 × 341, crop at row 16, column 58):
    >>> [round(x, 2) for x in eval_box(375, 500, 224)]
    [23.44, 85.04, 328.12, 328.45]
  """
  short = eval_size(size)
  if height <= width:
    new_h, new_w = short, int(short * width / height)
  else:
    new_h, new_w = int(short * height / width), short
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  fy, fx = height / new_h, width / new_w
  return Box(top * fy, left * fx, size * fy, size * fx)


def view_rng(seed: int, draw: Sequence[int], view: int) -> np.random.Generator:
  """The generator of one view: a pure function of (seed, draw, view).

  `draw` names the example's occurrence in the stream: (epoch, index in the
  split) for epoch-based pipelines, (batch number, row) for class-balanced
  batches.

  >>> a = view_rng(0, (1, 7), 0).uniform()
  >>> a == view_rng(0, (1, 7), 0).uniform() != view_rng(0, (1, 7), 1).uniform()
  True
  """
  return np.random.default_rng((seed, *draw, view))
