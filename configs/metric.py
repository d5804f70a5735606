"""Supervised metric learning experiment configs (`ssljax.methods.metric`):
batch-hard triplet loss on class-balanced P×K batches (Hermans et al. 2017)
by default (batch-all on mnist5k); `method.loss` picks any other metric
loss.

    python experiments/pretrain.py --config=configs/metric.py:cifar10 \
        --workdir=runs/metric_cifar10
    python experiments/pretrain.py \
        --config=configs/metric.py:mnist5k,method.loss=arcface

`get_config(arg)`: arg = preset[,key=value...], see `configs/common.py`.
The batches must carry labels and be class-balanced for the pair losses:
`method.classes_per_batch` classes of `batch_size / classes_per_batch`
images (`ssljax.data.balanced`). `method.num_classes` follows the dataset.
Published numbers: none for these presets (the metric-learning papers
report retrieval recall on CUB/Cars/SOP, re-identification and face
verification, not linear top-1 here); mnist5k is a smoke run of a few
minutes on a CPU.
"""

from configs import common

# Hermans et al.: Adam at 3e-4 with batch P·K = 18·4 on person re-id; here
# the batch is 256. The margins, scales and temperatures stay None (each
# loss's own default: 0.2 for the triplet), so `method.loss=...` alone
# switches to another loss with its paper's values.
_ADAM = {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3,
         "optimizer.weight_decay": 1e-4}

RECIPES = {
    # Batch-hard triplets collapsed here (every embedding equal, the loss
    # stuck at the margin, kNN 0.922 at 10 epochs); batch-all did not
    # (0.975; semi-hard 0.972).
    "mnist5k": {**common.MNIST5K_ADAMW, "method.proj_hidden_dim": 256,
                "method.proj_dim": 64, "method.classes_per_batch": 8,
                "method.mining": "batch_all"},
    "cifar": {**_ADAM, "method.proj_hidden_dim": 1024, "method.proj_dim": 128,
              "method.classes_per_batch": 8, "total_epochs": 200.0},
    "imagenet100": {**_ADAM, "method.classes_per_batch": 32,
                    "total_epochs": 100.0},
    "imagenet2012": {**_ADAM, "method.classes_per_batch": 512,
                     "total_epochs": 90.0},
}


def get_config(arg: str = "mnist5k"):
  preset, _ = common.parse_arg(arg)
  family = "cifar" if preset.startswith("cifar") else preset
  classes = common.dataset_fields(preset)["num_classes"]
  recipes = {family: {**RECIPES[family], "method.num_classes": classes}}
  return common.get_config("metric", arg, recipes)
