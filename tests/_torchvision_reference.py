"""torchvision's crop sampler and resized crop, run in their own process.

    python tests/_torchvision_reference.py OUT.npz PICTURE.png

Writes to OUT.npz, for every case of `BOX_CASES`, `boxes_<i>`: [n, 4]
boxes (top, left, height, width) from `RandomResizedCrop.get_params`, and
for every box of `CROP_BOXES`, `crop_<i>`: `F.resized_crop` of PICTURE to
`CROP_SIZE`². torch is imported here only: importing it into a process that
already holds TensorFlow crashes (both ship their own protobuf and kernels).
"""

import sys

import numpy as np

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


def main(out: str, picture: str) -> None:
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
        image, list(scale), list(ratio)) for _ in range(draws)])
  with Image.open(picture) as image:
    image = image.convert("RGB")
    for i, box in enumerate(CROP_BOXES):
      arrays[f"crop_{i}"] = np.asarray(functional.resized_crop(
          image, *box, [CROP_SIZE, CROP_SIZE]))
  np.savez(out, **arrays)


if __name__ == "__main__":
  main(*sys.argv[1:])
