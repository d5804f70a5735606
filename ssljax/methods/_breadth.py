"""What the breadth methods (`clip`, `cpc`, `metric`) share: how many views
of an `augment` recipe they use.

CLIP's two towers need exactly two views; CPC and supervised metric learning
take one view per image, as their official code does, or the first
`num_views` of a recipe, each view a separate sample. `views_used` checks that
number when the factory runs and gives the views' maker and their host crops.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from ssljax import _common
from ssljax.methods import _shared

# Any side: the number of views a recipe makes does not depend on it.
_PROBE_SIDE = 32


def view_count(setup: _shared.Setup) -> int:
  """The views a recipe makes; "none" makes one, the batch itself.

  Example:
    >>> setup = _shared.setup("tiny_cnn", None,
    ...                       _shared.augment_config("byol"), "float32")
    >>> view_count(setup)
    2
  """
  return max(len(setup.views.specs(_PROBE_SIDE)), 1)


class UsedViews(NamedTuple):
  """The first views of a recipe (see `views_used`).

  Attributes:
    make: `make(rng, batch) -> tuple of [B, s, s, C]` normalised float32
      views of the batch.
    crops: `Method.crops`, the recipes of those views only, so that a host
      pipeline cuts no crop that the method would drop.
  """
  make: Callable
  crops: Callable


def views_used(setup: _shared.Setup, num_views: int, fn: str) -> UsedViews:
  """The first `num_views` views of the factory's `augment` recipe.

  Raises:
    ValueError: naming `num_views` if it is not an int in [1, the views the
      recipe makes].

  Example:
    >>> setup = _shared.setup("tiny_cnn", None,
    ...                       _shared.augment_config("byol"), "float32")
    >>> len(views_used(setup, 1, "cpc").crops(16))
    1
  """
  _common.check_count(num_views, "num_views", fn, minimum=1)
  available = view_count(setup)
  if num_views > available:
    raise ValueError(f"{fn}: `num_views` = {num_views}, but the `augment` "
                     f"recipe makes {available} view(s).")

  def make(rng, batch):
    return setup.views.make(rng, batch, count=num_views)

  def crops(image_size: int):
    return setup.views.specs(image_size)[:num_views]

  return UsedViews(make, crops)
