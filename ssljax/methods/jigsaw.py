"""Jigsaw puzzles: classify which permutation shuffled the 3 × 3 tiles.

Noroozi & Favaro, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles", ECCV 2016.

A set of P permutations of the 9 tiles, far apart in Hamming distance
(`ssljax.pretext.permutation_set`), is chosen once at `init` and kept in
`method_state` (a constant, so it is checkpointed with the run and a resumed
run classifies the same puzzles). Each step cuts every image into a 3 × 3
grid, crops a tile at a random place in each cell and standardises it on its
own, and shuffles the tiles with a permutation l drawn uniformly
(`ssljax.pretext.jigsaw_tiles`). The backbone F, shared by the 9 tiles (the
paper's context-free network), maps each tile to features; their
concatenation goes through an MLP head to P logits:

    loss = −1/B Σ_b log softmax(head([F(t_b,1), ..., F(t_b,9)]))_{l_b}

Defaults are the paper's: P = 1000 permutations, 64-pixel tiles in
75-pixel cells (`jigsaw_tiles`' default ratio), fc7 of 4096 units. The
permutation set is chosen by farthest-point selection (maximal minimum
Hamming distance, `criterion="min"` of `permutation_set`), not the
paper's summed-distance rule, which admits permutations 2 apart.

Differences from the paper: the head is an MLP on pooled backbone features
(the paper's fc6 per tile is the backbone's last layer here); the view
before tiling is a random resized crop with a flip
(`_pretext.light_augment`) rather than the paper's fixed 225-pixel crop.
`encode` gives the backbone features of whole images.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import jigsaw
  >>> method = jigsaw.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", head_hidden_dim=16,
  ...                      num_permutations=10)
  >>> images = jnp.zeros((4, 30, 30, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(method_state.permutations.shape, loss.shape, out.embeddings.shape)
  (10, 9) () (4, 8)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import pretext
from ssljax.methods import _pretext

GRID = 3


class JigsawState(NamedTuple):
  """The permutation set, [P, 9] int32, fixed for the whole run."""
  permutations: jax.Array


def default_config() -> ml_collections.ConfigDict:
  """The jigsaw's hyper-parameters (the paper's)."""
  return ml_collections.ConfigDict(dict(
      name="jigsaw", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), head_hidden_dim=4096, head_layers=2,
      num_permutations=1000, permutation_seed=0))


def init_state(config) -> JigsawState:
  """The permutation set of `config.method.{num_permutations,
  permutation_seed}`."""
  method = config.method
  return JigsawState(jnp.asarray(pretext.permutation_set(
      method.num_permutations, num_tiles=GRID * GRID,
      seed=method.permutation_seed)))


def task(config, rng, view, method_state: JigsawState):
  """Shuffled, standardised tiles [B, 9, t, t, C] and the index of the
  permutation that shuffled each image's tiles."""
  del config  # The tiles are standardised one by one, not with the dataset.
  return pretext.jigsaw_tiles(rng, view, method_state.permutations,
                              grid=GRID)


METHOD = _pretext.classification_method(_pretext.Classification(
    name="jigsaw", task=task,
    num_classes=lambda config: config.method.num_permutations,
    default_config=default_config, init_state=init_state))
