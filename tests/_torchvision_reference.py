"""torchvision's crop sampler and resized crop, stored as a test fixture.

    pip install -e ".[bench]" && python tests/_torchvision_reference.py

rewrites `tests/torchvision_reference.npz` (or OUT.npz when given), which the
crop tests read, so they compare against torchvision where torch is not
installed. It holds, for every case of `BOX_CASES`, `boxes_<i>`: [n, 4]
boxes (top, left, height, width) from `RandomResizedCrop.get_params` after
`torch.manual_seed(0)`; for every box of `CROP_BOXES`, `crop_<i>`:
`F.resized_crop` to `CROP_SIZE`² of `picture()`; and `picture_sha256`, so a
test sees when that picture is no longer the one that was cropped. `test_data_crops` reruns this script where torchvision is
installed and checks the stored arrays are still what it gives. torch is
imported here only: importing it into a process that already holds
TensorFlow crashes (both ship their own protobuf and kernels).
"""

import hashlib
import os
import sys

import numpy as np

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "torchvision_reference.npz")
# (height, width, scale, ratio, draws)
BOX_CASES = (
    (375, 500, (0.08, 1.0), (3 / 4, 4 / 3), 3000),
    (500, 333, (0.4, 1.0), (3 / 4, 4 / 3), 3000),
    (240, 320, (0.05, 0.4), (3 / 4, 4 / 3), 3000),
    (10, 100, (1.0, 1.0), (3 / 4, 4 / 3), 1),
    (100, 10, (1.0, 1.0), (3 / 4, 4 / 3), 1),
    (40, 50, (2.0, 3.0), (3 / 4, 4 / 3), 1),
)
CROP_BOXES = ((3, 19, 282, 366), (27, 71, 270, 326), (2, 219, 240, 209),
              (0, 0, 375, 500), (100, 100, 50, 60))
CROP_SIZE = 96


def picture() -> np.ndarray:
  """The picture that is cropped: 375 x 500, smooth, seeded."""
  import _pictures  # pylint: disable=import-outside-toplevel
  return _pictures.photo(375, 500)


def sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def main(out: str = FIXTURE) -> None:
  # pylint: disable=import-outside-toplevel
  import torch
  from PIL import Image
  from torchvision.transforms import functional
  from torchvision.transforms import transforms
  torch.manual_seed(0)
  arrays = {}
  for i, (height, width, scale, ratio, draws) in enumerate(BOX_CASES):
    image = torch.zeros(1, height, width)
    arrays[f"boxes_{i}"] = np.array([transforms.RandomResizedCrop.get_params(
        image, list(scale), list(ratio)) for _ in range(draws)], np.int32)
  rgb = picture()
  arrays["picture_sha256"] = np.array(sha256(rgb))
  image = Image.fromarray(rgb)
  for i, box in enumerate(CROP_BOXES):
    arrays[f"crop_{i}"] = np.asarray(functional.resized_crop(
        image, *box, [CROP_SIZE, CROP_SIZE]))
  np.savez_compressed(out, **arrays)


if __name__ == "__main__":
  main(*sys.argv[1:])
