"""DCL (Yeh et al. 2022) experiment configs: SimCLR's recipes, DCL's loss.

    python experiments/pretrain.py --config=configs/dcl.py:cifar10

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
Published linear top-1 that the presets target:
  cifar10, cifar100, imagenet100  none published for these recipes
                (solo-learn's SimCLR settings with DCL's loss)
  imagenet2012  66.9  ResNet-50, 200 epochs, batch 256 with SimCLR's
                      settings (the paper; 68.2 with its tuned ones, which
                      it does not list in full): SimCLR's official recipe
                      (`configs/simclr.py`) at this batch and length.
  mnist5k       none published; a row of the README table.

The authors released no code; where these recipes make a choice the paper
leaves open: docs/fidelity.md#dcl.
"""

from configs import common, simclr

RECIPES = {**simclr.RECIPES,
           "imagenet2012": {**simclr.RECIPES["imagenet2012"],
                            "batch_size": 256, "total_epochs": 200.0}}


def get_config(arg: str = "mnist5k"):
  return common.get_config("dcl", arg, RECIPES)
