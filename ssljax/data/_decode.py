"""Host decoding of encoded images into resized RGB crops, with Pillow.

`resized_crops(data, boxes, sizes)` decodes one encoded image (JPEG, PNG,
WebP, or any format Pillow reads) once and resamples each box of the
original to its square size, bilinearly with anti-aliasing (Pillow's
triangle filter scaled to the reduction, as torchvision's `resized_crop` on
PIL images). Every mode becomes 8-bit RGB:

* grayscale ("L", "1"), CMYK, YCbCr, palette: Pillow's conversion (a palette
  with transparency goes through RGBA first);
* alpha ("RGBA", "LA", ...): dropped, as torchvision's loader does;
* 16-bit ("I;16*", "I"): scaled by 255 / 65535 rather than clipped.

DCT-domain downscaling: a JPEG stores 8×8 blocks of cosine coefficients, so
libjpeg can decode it at 1/2, 1/4 or 1/8 of its size by inverting only the
low frequencies of each block, for a fraction of the work (Pillow's
`Image.draft`). When every box will be shrunk by at least a factor k in {2, 4,
8}, the image is decoded at 1/k and the boxes scaled by 1/k: the final
resampling still shrinks (or keeps) the crop, so no detail the view could
show is lost. Other formats are decoded at full size.
"""

from __future__ import annotations

import io
import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ssljax.data._crops import Box

DCT_FACTORS = (8, 4, 2)  # libjpeg's scaled decodes, largest first


class UnreadableImageError(ValueError):
  """Raised when bytes cannot be decoded as an image (corrupt, truncated,
  empty or not an image)."""


def dct_factor(boxes: Sequence[Box], sizes: Sequence[int]) -> int:
  """The largest k in {1, 2, 4, 8} with k·size <= min(height, width) of
  every box: decoding at 1/k still leaves each box at least its output size.

  >>> dct_factor([Box(0, 0, 500, 460)], [224])
  2
  >>> dct_factor([Box(0, 0, 900, 900), Box(0, 0, 100, 100)], [224, 48])
  2
  >>> dct_factor([Box(0, 0, 300, 300)], [224])
  1
  """
  room = min(min(box.height, box.width) / size
             for box, size in zip(boxes, sizes))
  return next((k for k in DCT_FACTORS if k <= room), 1)


def to_rgb(image: Image.Image) -> Image.Image:
  """`image` as 8-bit RGB (see the module docstring for each mode).

  >>> import numpy as np
  >>> deep = Image.fromarray(np.full((2, 2), 65535, np.uint16))
  >>> print(deep.mode, np.asarray(to_rgb(deep))[0, 0])
  I;16 [255 255 255]
  """
  if image.mode == "RGB":
    return image
  if image.mode.startswith("I"):
    # Pillow clips 16-bit values to 255 when converting; rescale instead.
    deep = np.clip(np.asarray(image, np.float64), 0, 65535)
    image = Image.fromarray(np.round(deep * (255 / 65535)).astype(np.uint8))
  elif image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  return image.convert("RGB")


def open_image(data: bytes) -> Image.Image:
  """Pillow's lazy image of `data` (header read, pixels not yet decoded)."""
  try:
    return Image.open(io.BytesIO(data))
  except Exception as error:  # Pillow raises many types for bad headers.
    raise UnreadableImageError(f"not a readable image: {error}") from error


def _resample(image: Image.Image, box: Box, factor: int, size: int,
              crop_first: bool) -> np.ndarray:
  """Box (in pixels of the original) of `image` (decoded at 1/factor) ->
  uint8 [size, size, 3]."""
  left, top = box.left / factor, box.top / factor
  right = (box.left + box.width) / factor
  bottom = (box.top + box.height) / factor
  if crop_first:
    # torchvision crops, then resizes: the filter sees only the crop's
    # pixels (Pillow's `box` alone would blend pixels outside it at the edge).
    region = (math.floor(left), math.floor(top), math.ceil(right),
              math.ceil(bottom))
    image = image.crop(region)
    left, right = left - region[0], right - region[0]
    top, bottom = top - region[1], bottom - region[1]
  return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR,
                                 box=(left, top, right, bottom)))


def resized_crops(data: bytes, boxes: Callable[[int, int], Sequence[Box]],
                  sizes: Sequence[int], *, dct_scaling: bool = True,
                  crop_first: bool = True) -> list[np.ndarray]:
  """Decodes `data` once into one uint8 [s, s, 3] RGB crop per output size.

  Args:
    data: the encoded image.
    boxes: `boxes(height, width)` -> one `Box` per entry of `sizes`, in
      pixels of the full-resolution image (read from the header before any
      pixel is decoded).
    sizes: the output side of each crop.
    dct_scaling: decode JPEGs at 1/2, 1/4 or 1/8 when every box is shrunk at
      least that much (`dct_factor`).
    crop_first: resample only the pixels of each box, as torchvision's
      `resized_crop` (crop, then resize) does; False lets the filter reach
      past the box edges, as resizing the whole image and then cropping
      (torchvision's `Resize` + `CenterCrop`) does.

  Returns:
    The crops, box i resampled to sizes[i] × sizes[i] (bilinear,
    anti-aliased).

  Raises:
    UnreadableImageError: if `data` is not a decodable image.

  Example:
    >>> import io, numpy as np
    >>> from ssljax.data._crops import Box
    >>> buffer = io.BytesIO()
    >>> Image.new("L", (40, 30), 90).save(buffer, "PNG")
    >>> (crop,) = resized_crops(buffer.getvalue(),
    ...                         lambda h, w: [Box(0, 0, h, h)], [8])
    >>> print(crop.shape, crop.dtype, crop[0, 0])
    (8, 8, 3) uint8 [90 90 90]
  """
  image = open_image(data)
  chosen = boxes(image.height, image.width)
  factor = 1
  if dct_scaling and image.format == "JPEG":
    factor = dct_factor(chosen, sizes)
    if factor > 1:
      # Pillow picks the largest factor f with f <= W // w and f <= H // h;
      # asking for (W // k, H // k) makes it exactly k.
      image.draft(None, (image.width // factor, image.height // factor))
  try:
    image.load()
    image = to_rgb(image)
  except Exception as error:  # truncated or corrupt data, in any format
    raise UnreadableImageError(f"corrupt image data: {error}") from error
  return [_resample(image, box, factor, size, crop_first)
          for box, size in zip(chosen, sizes)]
