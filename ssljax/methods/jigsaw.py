"""Jigsaw puzzles: classify which permutation shuffled the 3 × 3 tiles.

Noroozi & Favaro, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles", ECCV 2016; the official Caffe code
(MehdiNoroozi/JigsawPuzzleSolver).

A set of P permutations of the 9 tiles, far apart in Hamming distance
(`ssljax.pretext.permutation_set`), is fixed by (`num_permutations`,
`permutation_seed`) and kept in `method_state` (a constant, so it is
checkpointed with the run and a resumed run classifies the same puzzles).
Each step cuts every image into a 3 × 3 grid, crops a tile at a random
place in each cell and standardises it on its own, and shuffles the tiles
with a permutation l drawn uniformly (`ssljax.pretext.jigsaw_tiles`). The
backbone F, shared by the 9 tiles (the paper's context-free network), maps
each tile to features; their concatenation goes through an MLP head to P
logits:

    loss = −1/B Σ_b log softmax(head([F(t_b,1), ..., F(t_b,9)]))_{l_b}

Defaults are the paper's and the official code's: P = 1000 permutations
(fc8 has 1000 outputs), 64-pixel tiles in 75-pixel cells, fc7 of 4096
units (`head_hidden_dim`), the whole image as the puzzle (the official
data is the central 255-pixel square of each image resized to 256, with no
flip: `_pretext.WHOLE_IMAGE`), and each tile in its own forward call, as
the 9 separate siamese towers of the Caffe network
(`view_batchnorm="per_view"`; "joint" puts all 9B tiles in one call). The
permutation set is chosen by farthest-point selection (maximal minimum
Hamming distance, `criterion="min"` of `permutation_set`), not the
paper's summed-distance rule, which admits permutations 2 apart. `encode`
gives the backbone features of whole images. Differences from the official
code are in docs/fidelity.md#jigsaw.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.jigsaw(backbone="tiny_cnn", head_hidden_dim=16,
  ...                         num_permutations=10)
  >>> images = jnp.zeros((4, 30, 30, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(method_state.permutations.shape, loss.shape, out.embeddings.shape)
  (10, 9) () (4, 8)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssljax import _common, models, pretext
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method

GRID = 3
NUM_TILES = GRID * GRID

# A set of 1000 takes a few seconds to choose: once per process.
_permutation_set = functools.lru_cache(maxsize=8)(pretext.permutation_set)


class JigsawState(NamedTuple):
  """The permutation set, [P, 9] int32, fixed for the whole run."""
  permutations: jax.Array


def jigsaw(*, backbone: str | models.Model = "resnet50",
           backbone_kwargs: Mapping | None = None,
           augment: Mapping = _pretext.light_augment(**_pretext.WHOLE_IMAGE),
           dtype: str = "float32", head_hidden_dim: int = 4096,
           head_layers: int = 2, num_permutations: int = 1000,
           permutation_seed: int = 0, view_batchnorm: str = "per_view"
           ) -> Method:
  """Jigsaw puzzles (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      puzzle is cut from the first view of `augment`.
    head_hidden_dim, head_layers: the MLP head on the 9 tiles' features.
    num_permutations: P, the number of classes, 1 <= P <= 9!.
    permutation_seed: seeds the choice of the permutation set.
    view_batchnorm: "per_view" (the official separate towers: each tile
      position in its own call) or "joint" (all 9B tiles in one call).
  """
  fn = "jigsaw"
  _common.check_count(num_permutations, "num_permutations", fn, minimum=1)
  if num_permutations > math.factorial(NUM_TILES):
    raise ValueError(f"{fn}: `num_permutations` must be <= 9! = "
                     f"{math.factorial(NUM_TILES)}, got {num_permutations}.")
  _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  net = _pretext.classifier(fn, setup, num_permutations, head_hidden_dim,
                            head_layers,
                            towers=view_batchnorm)

  def init_state(batch):
    del batch  # The set depends on the hyper-parameters only.
    return JigsawState(jnp.asarray(_permutation_set(
        num_permutations, num_tiles=NUM_TILES, seed=permutation_seed)))

  def make(rng, view, method_state: JigsawState):
    # Each tile is standardised on its own, not with the dataset's stats.
    return _pretext.Task(*pretext.jigsaw_tiles(
        rng, view, method_state.permutations, grid=GRID))

  return _pretext.pretext_method(
      "jigsaw", setup, net, _pretext.on_view(setup, make), _pretext.classify,
      init_state=init_state)
