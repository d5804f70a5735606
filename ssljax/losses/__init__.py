"""Pure, jittable SSL and metric-learning losses; each returns a scalar mean.

    from ssljax import losses
    loss = losses.nt_xent(z1, z2, temperature=0.5)

Losses whose value depends on other examples take `axis_name`: inside
`jax.shard_map` they gather negatives / reduce statistics over that axis so the
mean of the per-device losses (and its gradient) equals the single-device loss
on the global batch. `nt_xent`, `clip`, `supcon` and `info_nce` also take
`implementation="auto" | "dense" | "blockwise"` and `block_size`. Masked
image modelling: `mae`, `ibot_patch`, `ijepa` and DINOv2's `koleo`
(`ssljax.losses.masked`).
"""

from ssljax.losses._blockwise import row_logsumexp
from ssljax.losses.clustering import (pcl_concentration, proto_nce, swav,
                                      swapped_prediction)
from ssljax.losses.contrastive import (bilinear_info_nce, clip, dcl, info_nce,
                                       moco, nnclr, nt_xent, supcon)
from ssljax.losses.masked import ibot_patch, ijepa, koleo, mae
from ssljax.losses.metric import (arcface, batch_triplet, center_loss,
                                  center_loss_update, contrastive_pair,
                                  cosface, lifted_structured, n_pair,
                                  soft_nearest_neighbour, sphereface, triplet)
from ssljax.losses.non_contrastive import (barlow_twins, byol, dino, simsiam,
                                           vicreg)

__all__ = (
    "nt_xent", "dcl", "info_nce", "moco", "nnclr", "supcon", "clip",
    "bilinear_info_nce", "contrastive_pair", "triplet", "batch_triplet",
    "n_pair", "lifted_structured", "soft_nearest_neighbour", "byol", "simsiam",
    "barlow_twins", "vicreg", "dino", "swav", "proto_nce", "center_loss",
    "sphereface", "cosface", "arcface",
    # Companions of the contract losses, and the memory-bounded row
    # logsumexp they are built on (for losses of your own).
    "row_logsumexp",
    "center_loss_update", "pcl_concentration", "swapped_prediction",
    # Masked image modelling.
    "mae", "ibot_patch", "ijepa", "koleo",
)
