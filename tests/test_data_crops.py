"""Host crops: boxes against torchvision's RandomResizedCrop, evaluation
sizes, resampling against torchvision's PIL path, DCT-domain downscaling and
colour-mode conversion."""

import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from ssljax.data import _crops
from ssljax.data import _decode
from ssljax.data import _examples

import _pictures  # pylint: disable=wrong-import-order
import _torchvision_reference  # pylint: disable=wrong-import-order

DRAWS = 3000


def reference_box(rng, height, width, scale, ratio):
  """torchvision's `RandomResizedCrop.get_params`, transcribed line by line
  from torchvision 0.29 (torch's generator replaced by numpy's), so the
  fallback is checked where torchvision is not installed too."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      return (int(rng.integers(0, height - h + 1)),
              int(rng.integers(0, width - w + 1)), h, w)
  in_ratio = float(width) / float(height)
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w = width
    h = height
  return (height - h) // 2, (width - w) // 2, h, w


@pytest.fixture(scope="module")
def torchvision(tmp_path_factory):
  """torchvision's boxes and crops, as stored by
  tests/_torchvision_reference.py, and the cropped picture as a PNG file."""
  with np.load(_torchvision_reference.FIXTURE) as stored:
    arrays = dict(stored)
  rgb = _torchvision_reference.picture()
  assert _torchvision_reference.sha256(rgb) == arrays["picture_sha256"], (
      "the picture is not the one torchvision cropped: rerun "
      "tests/_torchvision_reference.py")
  picture = str(tmp_path_factory.mktemp("torchvision") / "picture.png")
  Image.fromarray(rgb).save(picture)
  return arrays, picture


def test_stored_reference_is_what_torchvision_gives(tmp_path):
  """Reruns torchvision (the `bench` extra) where it is installed: the
  stored draws and crops must be exactly its output."""
  out = str(tmp_path / "reference.npz")
  script = os.path.join(os.path.dirname(__file__),
                        "_torchvision_reference.py")
  done = subprocess.run([sys.executable, script, out], capture_output=True,
                        text=True, timeout=300)
  if done.returncode and "No module named" in done.stderr:
    pytest.skip(f"torchvision is not installed: {done.stderr.strip()[-80:]}")
  assert done.returncode == 0, done.stderr
  with np.load(out) as fresh, np.load(_torchvision_reference.FIXTURE) as old:
    assert sorted(fresh) == sorted(old)
    for name in fresh:
      np.testing.assert_array_equal(fresh[name], old[name], err_msg=name)


def _case(height, width, scale, ratio):
  cases = [c[:4] for c in _torchvision_reference.BOX_CASES]
  return cases.index((height, width, scale, ratio))


def our_boxes(height, width, scale, ratio, n):
  return np.array([_crops.random_box(_crops.view_rng(0, (i,), 0), height,
                                     width, scale=scale, ratio=ratio)
                   for i in range(n)], np.int64)


@pytest.mark.parametrize("height,width,scale", [
    (375, 500, (0.08, 1.0)),   # SimCLR/BYOL
    (500, 333, (0.4, 1.0)),    # DINO's global crops, a portrait picture
    (240, 320, (0.05, 0.4)),   # DINO's local crops
])
def test_box_distributions_match_torchvision(torchvision, height, width,
                                             scale):
  ratio = (3 / 4, 4 / 3)
  ours = our_boxes(height, width, scale, ratio, DRAWS)
  theirs = torchvision[0][f"boxes_{_case(height, width, scale, ratio)}"]
  for boxes in (ours, theirs):
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()

  def area(b):
    return b[:, 2] * b[:, 3] / (height * width)

  def log_aspect(b):
    return np.log(b[:, 3] / b[:, 2])

  for statistic in (area, log_aspect):
    assert stats.ks_2samp(statistic(ours), statistic(theirs)).pvalue > 1e-3
  # The same range of areas (what fits of `scale` in this picture).
  np.testing.assert_allclose([area(ours).min(), area(ours).max()],
                             [area(theirs).min(), area(theirs).max()],
                             atol=0.02)
  # Positions: uniform over every place the box fits, both ends reached.
  top, left, h, w = ours.T
  for start, room in ((top, height - h), (left, width - w)):
    spread = room > 0
    relative = (start[spread] + 0.5) / (room[spread] + 1)
    assert stats.kstest(relative, "uniform").pvalue > 1e-3
    assert (start == 0).any() and (start == room).any()


@pytest.mark.parametrize("height,width,scale,ratio", [
    (10, 100, (1.0, 1.0), (3 / 4, 4 / 3)),   # too wide: aspect clamped
    (100, 10, (1.0, 1.0), (3 / 4, 4 / 3)),   # too tall
    (40, 50, (2.0, 3.0), (3 / 4, 4 / 3)),    # no box fits: whole image
])
def test_fallback_is_torchvisions_central_crop(torchvision, height, width,
                                               scale, ratio):
  boxes = our_boxes(height, width, scale, ratio, 20)
  want = reference_box(np.random.default_rng(0), height, width, scale, ratio)
  assert (boxes == np.array(want)).all()
  # Then torchvision's own draw.
  arrays, _ = torchvision
  theirs = arrays[f"boxes_{_case(height, width, scale, ratio)}"]
  assert tuple(theirs[0].tolist()) == want


def test_boxes_are_a_pure_function_of_seed_draw_and_view():
  def box(seed, draw, view):
    return _crops.random_box(_crops.view_rng(seed, draw, view), 375, 500)
  assert box(3, (1, 7), 0) == box(3, (1, 7), 0)
  assert len({box(3, (1, 7), 0), box(4, (1, 7), 0), box(3, (2, 7), 0),
              box(3, (1, 8), 0), box(3, (1, 7), 1)}) == 5


@pytest.mark.parametrize("size,want", [(224, 256), (96, 110), (32, 37),
                                       (160, 183)])
def test_eval_size_is_size_over_0875(size, want):
  assert _crops.eval_size(size) == want == round(size / 0.875)


def _encoded(array, fmt="PNG", **kwargs):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


@pytest.mark.parametrize("height,width,size", [
    (375, 500, 224), (500, 375, 224), (91, 37, 32), (100, 100, 224),
    (224, 224, 224), (64, 48, 28)])
def test_eval_crop_is_torchvisions_resize_then_centre_crop(height, width,
                                                           size):
  """Against the two-step transform in Pillow (torchvision's `Resize(R)` +
  `CenterCrop(S)` on PIL images), including an upscaled small picture."""
  picture = _pictures.photo(height, width)
  short = round(size / 0.875)
  new_h, new_w = ((short, int(short * width / height)) if height <= width
                  else (int(short * height / width), short))
  resized = np.asarray(Image.fromarray(picture).resize(
      (new_w, new_h), Image.Resampling.BILINEAR)).astype(int)
  top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
  want = resized[top:top + size, left:left + size]
  got = _examples.HostDecoder(image_size=size)(_encoded(picture), (0, 0))
  assert got["image"].shape == (size, size, 3)
  assert np.abs(got["image"] - want).max() <= 1  # float rounding


def test_random_crops_equal_torchvisions_resized_crop(torchvision):
  """Without DCT scaling, a view is torchvision's F.resized_crop of the
  same box (bilinear, anti-aliased, on the PIL image), pixel for pixel."""
  arrays, picture = torchvision
  with open(picture, "rb") as f:
    data = f.read()
  for i, box in enumerate(_torchvision_reference.CROP_BOXES):
    (ours,) = _decode.resized_crops(
        data, lambda h, w, b=box: [_crops.Box(*b)],
        [_torchvision_reference.CROP_SIZE], dct_scaling=False)
    np.testing.assert_array_equal(ours, arrays[f"crop_{i}"])


def test_dct_scaling_decodes_smaller_and_stays_close():
  picture = _pictures.photo(1200, 1600)
  data = _encoded(picture, "JPEG", quality=95)
  boxes = [_crops.Box(100, 200, 960, 960), _crops.Box(0, 0, 600, 500)]
  sizes = [224, 112]
  assert _decode.dct_factor(boxes, sizes) == 4
  fast = _decode.resized_crops(data, lambda h, w: boxes, sizes)
  full = _decode.resized_crops(data, lambda h, w: boxes, sizes,
                               dct_scaling=False)
  for a, b in zip(fast, full):
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b).mean() < 2.0
    assert not np.array_equal(a, b)  # The reduced decode did happen.
  # A box that is not shrunk twice gets a full decode: identical results.
  near = [_crops.Box(0, 0, 400, 400)]
  np.testing.assert_array_equal(
      _decode.resized_crops(data, lambda h, w: near, [224])[0],
      _decode.resized_crops(data, lambda h, w: near, [224],
                            dct_scaling=False)[0])


def _cmyk_jpeg():
  buffer = io.BytesIO()
  Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(buffer, "JPEG",
                                                     quality=100)
  return buffer.getvalue()


def _palette_png_with_transparency():
  image = Image.new("P", (30, 20), 1)
  image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
  buffer = io.BytesIO()
  image.save(buffer, "PNG", transparency=0)
  return buffer.getvalue()


@pytest.mark.parametrize("data,want", [
    (_encoded(np.full((20, 30), 77, np.uint8), "JPEG", quality=100),
     (77, 77, 77)),                                          # grayscale
    (_encoded(np.full((20, 30, 4), (10, 200, 30, 0), np.uint8)),
     (10, 200, 30)),                                         # RGBA
    (_cmyk_jpeg(), (255, 0, 0)),                             # CMYK
    (_encoded(np.full((20, 30), 257 * 90, np.uint16)), (90, 90, 90)),
    (_palette_png_with_transparency(), (0, 0, 255)),
    (_encoded(np.full((20, 30, 3), (40, 80, 120), np.uint8), "WEBP",
              lossless=True), (40, 80, 120)),
    (_encoded(np.full((20, 30, 2), (60, 255), np.uint8)), (60, 60, 60)),  # LA
])
def test_every_mode_becomes_rgb(data, want):
  decoder = _examples.HostDecoder(image_size=8,
                                  crops=[_examples.CropSpec(6)])
  (view,) = decoder(data, (0, 0))["crops"]
  assert view.shape == (6, 6, 3) and view.dtype == np.uint8
  np.testing.assert_allclose(view.reshape(-1, 3).mean(0), want, atol=2)


@pytest.mark.parametrize("data", [b"", b"not an image", _encoded(
    _pictures.photo(60, 80), "JPEG")[:400], _encoded(_pictures.photo(60, 80))[:-30]])
def test_unreadable_bytes_raise_the_decoders_error(data):
  with pytest.raises(_decode.UnreadableImageError):
    _examples.HostDecoder(image_size=8)(data, (0, 0))


@pytest.mark.parametrize("crops,match", [
    ([], "crops"), ("simclr", "crops"), ([object()], r"crops\[0\]"),
    ([_examples.CropSpec(0)], r"crops\[0\].size"),
    ([_examples.CropSpec(8, scale=(0.5, 0.1))], r"crops\[0\].scale"),
    ([_examples.CropSpec(8, ratio=(0, 1))], r"crops\[0\].ratio"),
])
def test_bad_crops_are_named(crops, match):
  with pytest.raises(ValueError, match=match):
    _examples.crop_specs(crops, "load")
