"""Toy images for method tests: four recognisable shapes plus noise."""

import numpy as np


def shape_images(labels, size=16, seed=0):
  """uint8 [n, size, size, 1], image i showing shape `labels[i]` of 4 (two
  stripe orientations, a disc, a diagonal) plus noise; int32 labels."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  shapes = [(yy // 2) % 2, (xx // 2) % 2,
            (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2,
            np.abs(yy - xx) < 3]
  images = [200 * shapes[c] + rng.integers(0, 50, (size, size))
            for c in labels]
  return (np.stack(images).astype(np.uint8)[..., None],
          np.asarray(labels).astype(np.int32))


def alternating_batches(images, labels, batch_size, n_steps):
  """`n_steps` batch dicts alternating between the first two blocks."""
  return [{"image": images[i % 2 * batch_size:][:batch_size],
           "label": labels[i % 2 * batch_size:][:batch_size]}
          for i in range(n_steps)]
