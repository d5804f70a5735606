"""Label makers for pretext tasks: pure, jittable functions of image batches.

    from ssljax import pretext
    rotated, labels = pretext.rotations(images)              # RotNet
    perms = pretext.permutation_set(100)                     # jigsaw classes
    tiles, labels = pretext.jigsaw_tiles(key, images, perms)
    centre, neighbour, labels = pretext.relative_patches(key, images)
    mask = pretext.center_mask(images.shape)                 # context encoder
    lab = pretext.rgb_to_lab(images)                         # colourisation
    targets = pretext.encode_ab(lab[..., 1:], pretext.ab_bins())
    noisy = pretext.corrupt(key, images, kind="masking")     # denoising AE

Images are float [B, H, W, C] in [0, 1] with C = 1 or 3; outputs are in the
compute dtype (float32 for bf16/f16 inputs). A random label maker takes one
key and gives example b the key `jax.random.split(key, B)[b]`, so an
example's draw does not depend on how the batch is sharded. Shapes and
hyper-parameters are checked at trace time (`ValueError` naming the
argument). `permutation_set` and `ab_bins` are numpy constants computed once
outside the jitted step.
"""

from ssljax.pretext.colorization import (ab_bins, decode_ab, encode_ab,
                                         lab_to_rgb, rgb_to_lab)
from ssljax.pretext.denoising import corrupt
from ssljax.pretext.inpainting import (apply_mask, center_mask, masked_l2,
                                       random_block_mask)
from ssljax.pretext.jigsaw import jigsaw_tiles, permutation_set
from ssljax.pretext.relative_patch import NEIGHBOURS, relative_patches
from ssljax.pretext.rotation import (NUM_ROTATIONS, random_rotation, rotate,
                                     rotations)

__all__ = (
    "rotations", "random_rotation", "rotate", "NUM_ROTATIONS",
    "permutation_set", "jigsaw_tiles",
    "relative_patches", "NEIGHBOURS",
    "center_mask", "random_block_mask", "apply_mask", "masked_l2",
    "rgb_to_lab", "lab_to_rgb", "ab_bins", "encode_ab", "decode_ab",
    "corrupt",
)
