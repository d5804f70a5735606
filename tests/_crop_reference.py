"""Numpy reference of the pretext crops' standardisation (jigsaw tiles,
relative patches), shared by the pretext and the method tests."""

import numpy as np


def np_standardize(crop, joint_channels=False):
  """[h, w, C] crop: per-channel mean removed; the scale per channel, or
  one for the crop, with 1e-6 added to the variance."""
  centred = np.asarray(crop, np.float64) - np.mean(crop, axis=(0, 1))
  axes = (0, 1, 2) if joint_channels else (0, 1)
  return centred / np.sqrt(np.mean(centred ** 2, axis=axes) + 1e-6)
