"""Context prediction: where is the neighbour patch relative to the centre?

Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning by
Context Prediction", ICCV 2015; the official code (cdoersch/deepcontext).

Each step takes, from every image, the centre patch of a 3 × 3 layout and
one of its 8 neighbours drawn uniformly, with a gap between the patches and
a random jitter of their positions (`ssljax.pretext.relative_patches`, the
paper's 96-pixel patches 48 apart with up to 7 pixels of jitter, scaled to
the image) and standardises each patch on its own, as the authors' code
does. The backbone F, shared by both patches (the paper's late-fusion pair
of towers), maps each patch to features; their concatenation goes through
an MLP head to 8 logits:

    loss = −1/B Σ_b log softmax(head([F(centre_b), F(neighbour_b)]))_{l_b}

with l_b in 0..7 the neighbour's position, row-major around the centre
(`ssljax.pretext.NEIGHBOURS`).

Defaults follow the official code: the chromatic-aberration counter-measure
is colour dropping (`chromatic="drop"`: each patch keeps one random colour
channel, the other two become faint noise; "projection" is the paper's
other one, "none" the only choice on one-channel data); the head is fc7-fc8
of 4096 units and fc9 (`head_layers=3`); a third of the patches is blurred
(`blur_prob=0.33`: resampled to 10-95 of 96 pixels and back, so that fine
detail cannot place them); all patches of a batch go through the network in
one call (`view_batchnorm="joint"`); no flip, and a view of
a third to all of the image (`scale=(1/3, 1)`: the official code resizes
each image to 150k-450k pixels, of which a 3 × 3 layout of 96-pixel patches
48 apart covers 147k). `encode` gives the backbone features of whole
images. Differences from the official code (every adjacent pair of a grid
over the image instead of one pair per image, a summed loss) are in
docs/fidelity.md#relative_patch.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.relative_patch(backbone="tiny_cnn", head_hidden_dim=16)
  >>> images = jnp.zeros((4, 24, 24, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import _common, models, pretext
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method
from ssljax.pretext import relative_patch as relative_patch_lib


def task(rng: jax.Array, view: jax.Array, chromatic: str,
         blur_prob: float = 0.0) -> _pretext.Task:
  """[B, 2, p, p, C] (centre, neighbour), each patch standardised on its
  own, and the neighbour's position label [B]."""
  centre, neighbour, labels = pretext.relative_patches(
      rng, view, chromatic=chromatic, blur_prob=blur_prob)
  return _pretext.Task(jnp.stack([centre, neighbour], axis=1), labels)


def relative_patch(*, backbone: str | models.Model = "resnet50",
                   backbone_kwargs: Mapping | None = None,
                   augment: Mapping = _pretext.light_augment(
                       scale=(1 / 3, 1.0), flip_prob=0.0),
                   dtype: str = "float32", head_hidden_dim: int = 4096,
                   head_layers: int = 3, chromatic: str = "drop",
                   blur_prob: float = 0.33, view_batchnorm: str = "joint"
                   ) -> Method:
  """Context prediction (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      patches are cut from the first view of `augment`.
    head_hidden_dim, head_layers: the MLP head on the pair's features.
    chromatic: "drop" (the official code), "projection" or "none" (the
      only one for one-channel images).
    blur_prob: the share of patches resampled to fewer pixels and back
      (the official 0.33).
    view_batchnorm: "joint" (the official batch of all patches) or
      "per_view" (centres and neighbours in separate calls).
  """
  fn = "relative_patch"
  if chromatic not in relative_patch_lib.CHROMATIC:
    raise ValueError(f"{fn}: `chromatic` must be one of "
                     f"{relative_patch_lib.CHROMATIC}, got {chromatic!r}.")
  _common.check_in_range(blur_prob, 0.0, 1.0, "blur_prob", fn)
  _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  net = _pretext.classifier(fn, setup, len(pretext.NEIGHBOURS),
                            head_hidden_dim, head_layers,
                            towers=view_batchnorm)

  def make(rng, view, method_state):
    del method_state  # Nothing is kept.
    return task(rng, view, chromatic, blur_prob)

  return _pretext.pretext_method(
      fn, setup, net, _pretext.on_view(setup, make), _pretext.classify)
