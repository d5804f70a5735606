"""Host input rate: decoded, randomly cropped 224² views per second.

    python benchmarks/input.py                    # 256 files, 1 and 2 workers
    python benchmarks/input.py --files=512 --workers=1,2,4 --batch=64
    python benchmarks/input.py --no_torch         # ssljax only

Generates (deterministically, in a temporary folder) a folder of
ImageNet-like JPEGs, about 500×375 at quality 90, in class subfolders, and
reads it for `--epochs` epochs after one warm-up batch:

* ssljax: `data.load("imagefolder", ..., crops=[ViewSpec(224)])` (one view
  per picture, its random-resized-crop box drawn from the original and
  resized on the host), with W grain worker processes ("procs"), and with W
  threads in this process ("threads");
* PyTorch: `DataLoader(ImageFolder(..., RandomResizedCrop(224) +
  PILToTensor()), num_workers=W)` on the same files, same batch size (the
  `bench` extra: pip install -e ".[bench]").

It prints views/s, views/s per worker and the ratio to PyTorch at the same
W, the CPU time per view of both in one thread (a per-core rate that a
loaded machine does not distort), then the gain of DCT-domain JPEG
downscaling (decoding at 1/2, 1/4, 1/8 when every crop shrinks that much;
`dct_scaling=False` turns it off) in three cases: 224² views of these
~500×375 pictures (a box must keep 448 pixels on its short side to allow
1/2: rare), 96² views (multi-crop's local views), and 224² views of
2000×1500 photographs (a phone's), where every crop shrinks a lot. Run on
an otherwise idle machine: the rates are wall-clock.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from ssljax import data

SIZES = ((375, 500), (500, 375), (333, 500), (375, 500), (400, 500),
         (500, 500))


def photo(height: int, width: int, seed: int) -> Image.Image:
  """A photograph-like picture: smooth colour fields plus sensor noise, so
  that its JPEG is about as large as an ImageNet picture's (~110 kB)."""
  rng = np.random.default_rng(seed)
  coarse = (rng.random((height // 24 + 2, width // 24 + 2, 3)) * 255)
  smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(
      (width, height), Image.Resampling.BICUBIC), np.float32)
  noisy = smooth + rng.normal(0, 18, smooth.shape)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_folder(root: str, files: int, *, sizes=SIZES, classes: int = 4
                ) -> str:
  """`files` JPEGs (quality 90) in `classes` class folders of `root/train`.
  """
  for i in range(files):
    folder = os.path.join(root, "train", f"class{i % classes}")
    os.makedirs(folder, exist_ok=True)
    height, width = sizes[i % len(sizes)]
    photo(height, width, i).save(os.path.join(folder, f"{i:05d}.jpg"),
                                 "JPEG", quality=90)
  return root


def rate(batches, count: int, batch: int) -> float:
  """Views per second over `count` batches of `batch` views after a first
  (warm-up) one."""
  next(batches)
  start = time.perf_counter()
  for _ in range(count):
    next(batches)
  return count * batch / (time.perf_counter() - start)


def ssljax_rate(root: str, *, workers: int, processes: bool, batch: int,
                count: int, size: int = 224, dct: bool = True) -> float:
  """views/s of ssljax's folder pipeline."""
  parallel = dict(num_workers=workers, num_threads=1) if processes else \
      dict(num_workers=0, num_threads=workers)
  it = data.load("imagefolder", "train", path=root, batch_size=batch,
                 crops=[data.augment.ViewSpec(size=size)], dct_scaling=dct,
                 **parallel)
  try:
    return rate(it, count, batch)
  finally:
    it.close()


def torch_rate(root: str, *, workers: int, batch: int, count: int) -> float:
  """views/s of torchvision's ImageFolder + RandomResizedCrop(224)."""
  # pylint: disable=import-outside-toplevel
  import torch
  from torchvision import datasets, transforms
  torch.manual_seed(0)
  torch.set_num_threads(1)
  folder = datasets.ImageFolder(
      os.path.join(root, "train"),
      transform=transforms.Compose([transforms.RandomResizedCrop(224),
                                    transforms.PILToTensor()]))
  loader = torch.utils.data.DataLoader(
      folder, batch_size=batch, shuffle=True, num_workers=workers,
      drop_last=True, persistent_workers=True)

  def endless():
    while True:
      yield from loader
  return rate(endless(), count, batch)


def cpu_ms_per_view(root: str, *, use_torch: bool) -> tuple[float, float]:
  """CPU milliseconds per 224² view in this process, one thread: ssljax's
  host decoder (read, decode, box, resize) and torchvision's loader +
  RandomResizedCrop + PILToTensor over the same files. CPU time is what a
  core spends, so it is comparable on a loaded machine."""
  # pylint: disable=import-outside-toplevel
  from ssljax.data import _examples, _folder
  source = _folder.FolderSource(_folder.scan(root, "train"))
  decoder = _examples.HostDecoder(image_size=224,
                                  crops=[_examples.CropSpec(224)])

  def ours():
    for i in range(len(source)):
      _examples.decoded_example(decoder, i, source[i], (0, i), source)

  def theirs():
    from torchvision import datasets, transforms
    folder = datasets.ImageFolder(
        os.path.join(root, "train"),
        transform=transforms.Compose([transforms.RandomResizedCrop(224),
                                      transforms.PILToTensor()]))
    for i in range(len(folder)):
      folder[i]  # pylint: disable=pointless-statement

  times = []
  for run in (ours, theirs) if use_torch else (ours,):
    start = time.process_time()
    run()
    times.append((time.process_time() - start) / len(source) * 1e3)
  return times[0], times[1] if use_torch else float("nan")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--files", type=int, default=256)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--workers", default="1,2")
  parser.add_argument("--epochs", type=float, default=2.0,
                      help="epochs timed after the warm-up batch")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--no_dct", action="store_true",
                      help="skip the DCT-scaling comparison")
  args = parser.parse_args()
  count = max(1, int(args.epochs * args.files) // args.batch)
  with tempfile.TemporaryDirectory() as root:
    make_folder(root, args.files)
    kilobytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                    os.walk(root) for f in fs) / args.files / 1e3
    print(f"{args.files} JPEGs (~500×375, quality 90, {kilobytes:.0f} kB on "
          f"average), batch {args.batch}, {count} batches timed; "
          f"{os.cpu_count()} CPUs")
    header = (f"{'workers':>7} {'ssljax procs':>13} {'/worker':>8} "
              f"{'ssljax threads':>15} {'torch':>8} {'/worker':>8} "
              f"{'procs/torch':>12} {'threads/torch':>14}")
    print(header)
    print("-" * len(header))
    for workers in (int(w) for w in args.workers.split(",")):
      procs = ssljax_rate(root, workers=workers, processes=True,
                          batch=args.batch, count=count)
      threads = ssljax_rate(root, workers=workers, processes=False,
                            batch=args.batch, count=count)
      torch = float("nan") if args.no_torch else torch_rate(
          root, workers=workers, batch=args.batch, count=count)
      print(f"{workers:>7} {procs:>13.0f} {procs / workers:>8.0f} "
            f"{threads:>15.0f} {torch:>8.0f} {torch / workers:>8.0f} "
            f"{procs / torch:>12.2f} {threads / torch:>14.2f}", flush=True)
    ours, theirs = cpu_ms_per_view(root, use_torch=not args.no_torch)
    print(f"\nCPU time per 224² view, one thread: ssljax {ours:.2f} ms, "
          f"torch {theirs:.2f} ms (views per core-second: ssljax / torch = "
          f"{theirs / ours:.2f})")
    if args.no_dct:
      return
    print("\nDCT-domain downscaling, 1 worker process: views/s on / off")
    large = os.path.join(root, "large")
    make_folder(large, max(16, args.files // 8), sizes=((1500, 2000),))
    for name, folder, size in (("224² of ~500×375", root, 224),
                               ("96² of ~500×375", root, 96),
                               ("224² of 2000×1500", large, 224)):
      files = data.info("imagefolder", path=folder).num_train
      timed = max(1, int(args.epochs * files) // args.batch)
      on, off = (ssljax_rate(folder, workers=1, processes=True,
                             batch=args.batch, count=timed, size=size,
                             dct=dct) for dct in (True, False))
      print(f"  {name:<20} {on:>7.0f} / {off:>7.0f}  gain {on / off:.2f}×",
            flush=True)


if __name__ == "__main__":
  main()
