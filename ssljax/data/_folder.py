"""A user's own pictures: `DIR/train` and optionally `DIR/val`.

Each split folder holds either class subfolders (torchvision's ImageFolder
convention: the sorted subfolder names of `train/` are the classes 0, 1,
..., and `val/` uses the same names) or plain images (unlabelled, labels
-1). Images are found by extension (torchvision's list: .jpg, .jpeg, .png,
.ppm, .bmp, .pgm, .tif, .tiff, .webp; any case), recursively inside class
folders, in sorted order; names starting with "." are ignored. Only the
folder listing is read up front, so scanning scales to ImageNet-size
folders; a file that turns out unreadable when decoded is replaced by the
next readable one, counted and logged (see `_examples`).
"""

from __future__ import annotations

import os
from concurrent import futures
from typing import NamedTuple

import numpy as np

from ssljax.data import _examples

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
              ".tiff", ".webp")
SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}


class Folder(NamedTuple):
  """The images of one split folder.

  Attributes:
    root: the split folder.
    paths: image paths, class by class (sorted), each class sorted.
    labels: int32 [N] class index of each image (-1 when unlabelled).
    classes: class names (subfolder names), empty when unlabelled.
  """
  root: str
  paths: tuple[str, ...]
  labels: np.ndarray
  classes: tuple[str, ...]


def _visible(entries) -> list[os.DirEntry]:
  return sorted((e for e in entries if not e.name.startswith(".")),
                key=lambda e: e.name)


def _is_image(name: str) -> bool:
  return name.lower().endswith(EXTENSIONS)


def _images_under(folder: str) -> list[str]:
  """Image files anywhere under `folder`, sorted path by path."""
  found = []
  for parent, dirs, files in os.walk(folder, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [os.path.join(parent, f) for f in sorted(files)
              if not f.startswith(".") and _is_image(f)]
  return found


def split_folder(path: str, split: str) -> str:
  """`path/train` for split "train", `path/val` for "val" or "test"."""
  if split not in SPLIT_FOLDERS:
    raise ValueError(f"imagefolder: `split` must be one of "
                     f"{sorted(SPLIT_FOLDERS)}, got {split!r}.")
  return os.path.join(path, SPLIT_FOLDERS[split])


def _checked_root(path: str, split: str) -> str:
  root = split_folder(path, split)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"imagefolder: no folder {root} (expected "
                            "DIR/train, and optionally DIR/val).")
  return root


def _top_level(root: str) -> tuple[list[str], list[str]]:
  """(subfolder names, image file names) at the top of `root`, sorted."""
  with os.scandir(root) as listing:
    entries = _visible(listing)
  return ([e.name for e in entries if e.is_dir()],
          [e.name for e in entries if e.is_file() and _is_image(e.name)])


def scan(path: str, split: str) -> Folder:
  """Lists the images of `split` ("train", or "val"/"test": `path/val`).

  Args:
    path: the dataset folder (holding `train/` and optionally `val/`).
    split: which split folder to list; `val/` must follow `train/`'s
      structure (class subfolders named as train's, or plain images).

  Returns:
    The `Folder`, labelled when the split folder has subfolders.

  Raises:
    FileNotFoundError: if the split folder does not exist.
    ValueError: if it holds no image, mixes class subfolders with images at
      its top level, has a train class folder without images, or (for
      `val/`) its structure or class names differ from `train/`'s.

  Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for name in ("cat/1.png", "cat/2.png", "dog/1.jpg"):
    ...   os.makedirs(os.path.dirname(os.path.join(root, "train", name)),
    ...               exist_ok=True)
    ...   Image.new("RGB", (4, 4)).save(os.path.join(root, "train", name))
    >>> folder = scan(root, "train")
    >>> folder.classes, folder.labels.tolist()
    (('cat', 'dog'), [0, 0, 1])
  """
  root = _checked_root(path, split)
  subfolders, loose = _top_level(root)
  classes = None
  if SPLIT_FOLDERS[split] != "train":
    classes = tuple(_top_level(_checked_root(path, "train"))[0])
  if subfolders and loose:
    raise ValueError(
        f"imagefolder: {root} has both class subfolders ({subfolders[:3]}) "
        f"and {len(loose)} image(s) at its top level (e.g. {loose[0]!r}); "
        "put every image in a class folder, or none.")
  labelled = bool(subfolders)
  if classes is not None and labelled != bool(classes):
    want = "class subfolders" if classes else "plain images"
    raise ValueError(f"imagefolder: {root} must hold {want}, as the train "
                     "folder does.")
  if not labelled:
    paths = [os.path.join(root, name) for name in loose]
    labels = [-1] * len(paths)
    classes = ()
  else:
    classes = tuple(subfolders) if classes is None else classes
    unknown = sorted(set(subfolders) - set(classes))
    if unknown:
      raise ValueError(f"imagefolder: {root} has classes {unknown} that the "
                       f"train folder lacks (train classes: {classes[:10]}"
                       f"{'...' if len(classes) > 10 else ''}).")
    paths, labels, empty = [], [], []
    for label, name in enumerate(classes):
      found = _images_under(os.path.join(root, name))
      paths += found
      labels += [label] * len(found)
      if not found and name in subfolders:
        empty.append(name)
    # As torchvision's ImageFolder: a train class without images would still
    # get a label and a probe output that nothing can teach.
    if empty and SPLIT_FOLDERS[split] == "train" and len(empty) < len(classes):
      raise ValueError(f"imagefolder: class folder(s) {empty[:10]} of {root} "
                       f"hold no image (looked for {', '.join(EXTENSIONS)}); "
                       "remove them or add images.")
  if not paths:
    raise ValueError(f"imagefolder: {root} holds no image (looked for "
                     f"{', '.join(EXTENSIONS)}).")
  return Folder(root, tuple(paths), np.asarray(labels, np.int32), classes)


class FolderSource:
  """Random access to a `Folder` as `{"image": bytes, "label": int}` records.

  A file that cannot be read gives empty bytes, which the decoder reports as
  unreadable (the file is then replaced and counted, not a crash).

  >>> import tempfile
  >>> from PIL import Image
  >>> root = tempfile.mkdtemp()
  >>> os.makedirs(os.path.join(root, "train"))
  >>> Image.new("RGB", (4, 4)).save(os.path.join(root, "train", "a.png"))
  >>> source = FolderSource(scan(root, "train"))
  >>> len(source), source[0]["label"], source[0]["image"][1:4]
  (1, -1, b'PNG')
  """

  def __init__(self, folder: Folder):
    self.folder = folder

  def __len__(self) -> int:
    return len(self.folder.paths)

  def __getitem__(self, index: int) -> dict:
    path = self.folder.paths[index]
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError:
      data = b""
    return {"image": data, "label": int(self.folder.labels[index])}

  def describe(self, index: int) -> str:
    return self.folder.paths[index]


def folder_stats(path: str, *, image_size: int = 224, num_images: int = 1000,
                 num_threads: int = 4
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of a folder's training images.

  Computed on the [0, 1] scale over the evaluation crops (`image_size`) of
  `num_images` training images evenly spaced in the folder's order (all of
  them if fewer), so the result is deterministic: mean_c = Σ x / n and
  std_c = sqrt(Σ x² / n − mean_c²) over every pixel of every crop, as the
  usual ImageNet statistics are computed. Unreadable files are left out.

  Args:
    path: the dataset folder (with `train/`).
    image_size: side of the evaluation crops.
    num_images: how many images to sample.
    num_threads: decoding threads.

  Returns:
    (mean, std), three floats each.

  Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "train"))
    >>> Image.new("RGB", (8, 6), (255, 0, 51)).save(
    ...     os.path.join(root, "train", "a.png"))
    >>> mean, std = folder_stats(root, image_size=4)
    >>> print([round(m, 3) for m in mean], [round(s, 3) for s in std])
    [1.0, 0.0, 0.2] [0.0, 0.0, 0.0]
  """
  fn = "folder_stats"
  _examples.check_size(image_size, "image_size", fn)
  _examples.check_size(num_images, "num_images", fn)
  source = FolderSource(scan(path, "train"))
  picks = np.unique(np.linspace(0, len(source) - 1, min(num_images,
                                                         len(source)))
                    .round().astype(int))
  decoder = _examples.HostDecoder(image_size=image_size)

  def moments(index: int) -> np.ndarray | None:
    try:
      image = decoder(source[int(index)]["image"], draw=())["image"]
    except ValueError:  # unreadable
      return None
    pixels = image.reshape(-1, 3).astype(np.float64) / 255
    return np.stack([pixels.sum(0), np.square(pixels).sum(0),
                     np.full(3, len(pixels))])

  with futures.ThreadPoolExecutor(num_threads) as pool:
    parts = [m for m in pool.map(moments, picks) if m is not None]
  if not parts:
    raise ValueError(f"{fn}: no readable image in {source.folder.root}.")
  total, squares, count = np.sum(parts, axis=0)
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return tuple(mean.tolist()), tuple(std.tolist())
