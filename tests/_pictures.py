"""Folders of generated pictures in every format and mode a user's folder may
hold, for the image-folder tests."""

import os

import numpy as np
from PIL import Image


def picture(height, width, seed):
  rng = np.random.default_rng(seed)
  coarse = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((width, height),
                                                   Image.Resampling.BILINEAR))


def photo(height, width, seed=0):
  """A smooth random picture (low frequencies, like a photograph)."""
  rng = np.random.default_rng(seed)
  coarse = (rng.random((height // 16 + 2, width // 16 + 2, 3)) * 255)
  return np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(
      (width, height), Image.Resampling.BICUBIC))


def save_picture(path, seed, kind):
  """A picture of a random size in one of several formats and modes."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  h, w = (int(x) for x in rng.integers(20, 60, 2))
  rgb = picture(h, w, seed)
  if kind == "gray":
    Image.fromarray(rgb).convert("L").save(path, "JPEG")
  elif kind == "rgba":
    Image.fromarray(rgb).convert("RGBA").save(path, "PNG")
  elif kind == "cmyk":
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG")
  elif kind == "deep":
    gray = np.asarray(Image.fromarray(rgb).convert("L"), np.uint16) * 257
    Image.fromarray(gray).save(path, "PNG")
  elif kind == "webp":
    Image.fromarray(rgb).save(path, "WEBP")
  else:
    Image.fromarray(rgb).save(path, "JPEG", quality=90)


KINDS = ("rgb", "gray", "rgba", "cmyk", "deep", "webp")
EXTENSION = {"rgb": "jpg", "gray": "jpg", "rgba": "png", "cmyk": "jpeg",
             "deep": "png", "webp": "webp"}


def make_folder(root, classes=("cat", "dog", "eel"), per_class=6,
                val_per_class=2):
  """`root/train/<class>/` and `root/val/<class>/` of mixed pictures."""
  for split, count in (("train", per_class), ("val", val_per_class)):
    for c, name in enumerate(classes):
      for i in range(count):
        kind = KINDS[(i + c) % len(KINDS)]
        name_ = f"{i:02d}.{EXTENSION[kind]}"
        save_picture(os.path.join(root, split, name, name_),
                     seed=(split == "val") * 1000 + 100 * c + i, kind=kind)
  return str(root)
