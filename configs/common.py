"""What every `configs/<method>.py` shares: dataset presets, fields, overrides.

Each method config has `get_config(arg="mnist5k")`, where `arg` is a dataset
preset optionally followed by comma-separated overrides:

    <preset>[,<key>=<value>...]

    mnist5k                                  the default, minutes on a CPU
    cifar10,batch_size=128,total_epochs=200
    cifar100,method.temperature=0.1,optimizer.name=sgd
    imagefolder,dataset.path=/data/pics,dataset.image_size=160

Overrides, in one place. Two spellings set the same fields of the returned
(locked) `ml_collections.ConfigDict` and may be mixed:

* in `arg`: `key=value`, a key a dotted path into the config, a value a
  Python literal (`0.1`, `(0.2, 1.0)`, `'sgd'`), a bare word being taken as
  a string; a value cannot contain `,<word>=`, which starts the next
  override;
* on the command line: ml_collections' flags `--config.<key>=<value>`,
  applied after `get_config` (so after `arg`), parsed by the field's type.

An unknown key, or a value whose type does not match the field's, raises
`ValueError` naming the key (the flags raise their own error).

Presets: mnist5k, cifar10, cifar100, imagenet100, imagenet2012, and
imagefolder (your own pictures: `--config.dataset.path=DIR` with `train/`
and optionally `val/`, see `ssljax.data.load`; `dataset.image_size` is the
view side, default 224; `dataset.compute_stats=True` measures the folder's
mean and std instead of ImageNet's). The method recipe of imagefolder is
the method's imagenet2012 one, without its batch size and length.

Fields:

  method           the keyword arguments of the method's factory
                   (`ssljax.methods.<name>`), its defaults filled in from
                   the factory's signature, plus `name`: backbone, heads,
                   loss hyper-parameters, `augment` (an
                   `ssljax.data.augment` preset, its overrides and the
                   normalisation statistics, which follow `dataset`),
                   `dtype` (follows `compute_dtype`). `ssljax.methods.build`
                   turns it into the method.
  dataset          name, image_size, num_classes, train_size, mean, std
                   (and path for imagefolder).
  batch_size       global batch (all devices together).
  total_epochs     training length in epochs of `dataset.train_size`...
  total_steps      ...in optimizer steps: total_epochs × steps_per_epoch,
                   steps_per_epoch = train_size // batch_size. It follows
                   `total_epochs` and `batch_size` until set itself.
  seed             PRNG seed of the run.
  mesh             mesh.data: devices on the "data" axis, -1 for all.
  optimizer        name ("lars", "sgd" or "adamw"), learning_rate (the base
                   rate for a batch of 256; `ssljax.train` multiplies it by
                   batch_size / 256), weight_decay, momentum, warmup_steps,
                   and the parameter groups of the official code:
                   exclude_bias_and_norm, weight_decay_end, clip_grad,
                   clip_per_parameter, bias_lr_scale, constant_lr_parts
                   (see `ssljax.train.optim`).
  checkpoint_every, log_every   in steps.
  eval_every       kNN and collapse monitors every this many steps (0: only
                   at the end, with the linear probe); unset, at every
                   checkpoint.
  compute_dtype    "float32" or "bfloat16" (parameters stay float32).
  epoch_settings   the dotted keys of the settings counted in epochs.

Settings that papers count in epochs (warm-up, DINO's frozen last layer and
teacher-temperature warm-up, SwAV's queue start and frozen prototypes) are
written `epochs(n)` in the recipes and stored in steps; like `total_steps`
they follow `batch_size`. When `total_steps` is set shorter than they are,
`ssljax.train.fit_to_run` shrinks them with the run. Step-dependent values
that follow the run, such as BYOL's cosine EMA momentum, are written
`cosine(base, final)`: a `{"schedule": "cosine", ...}` field whose `steps`
follows `total_steps`.

Recipes: mnist5k is ours (`small_cnn`, 4 conv layers of 16-128 channels
whose last 4×4 map is flattened, 7×7 for the patch tasks; 30 epochs in
minutes on 2 CPU cores, views scaled to 28×28 digits; docs/mnist5k_recipes.md
has the sweeps behind them); cifar10/cifar100 and imagenet100 are
solo-learn's (da Costa et al., JMLR 2022: ResNet-18, 1000 and 400 epochs);
imagenet2012 follows each paper's ResNet-50 recipe. Solo-learn's LARS
applies the rate after the momentum (PyTorch's SGD under it), which the
cifar and imagenet100 presets follow (`optimizer.lars_rate_after_momentum`);
one difference holds for all of them: solo-learn's LARS clips its adaptive
rate (`clip_lr`, η = 0.02), optax's LARS (η = 1e-3) does not.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping, NamedTuple

import ml_collections

from ssljax import data, methods

PRESETS = ("mnist5k", "cifar10", "cifar100", "imagenet100", "imagenet2012",
           "imagefolder")

# Recipe keys that set the run's size; imagefolder drops them from the
# imagenet2012 recipe it borrows.
_RUN_SIZE_KEYS = ("batch_size", "total_epochs")

# ImageNet-100 (the 100-class subset of Tian et al. 2019, "CMC", that
# solo-learn uses) is not in `ssljax.data`'s registry, which provides the
# facts of every other preset.
_IMAGENET100 = dict(name="imagenet100", image_size=224, num_classes=100,
                    train_size=126_689, mean=data.augment.IMAGENET_MEAN,
                    std=data.augment.IMAGENET_STD)


class Epochs(NamedTuple):
  """A recipe value counted in epochs, stored as that many steps."""
  count: float


def epochs(count: float) -> Epochs:
  """`count` epochs, resolved to steps with the config's batch and dataset."""
  return Epochs(count)


class Cosine(NamedTuple):
  """BYOL's cosine schedule from `base` to `final` over the run."""
  base: float
  final: float


def cosine(base: float, final: float = 1.0) -> Cosine:
  """A recipe value: m(t) from `base` at step 0 to `final` at
  `total_steps` on BYOL's cosine (the EMA momentum of BYOL, DINO, MoCo v3),
  stored as `{"schedule": "cosine", "base", "final", "steps"}`."""
  return Cosine(base, final)


# Settings every method shares on a dataset, before the method's recipe.
# Keys: "mnist5k", "cifar" (cifar10 and cifar100), "imagenet100",
# "imagenet2012".
DATASET_RECIPES = {
    "mnist5k": {
        "method.backbone": "small_cnn",
        "method.backbone_kwargs": {"widths": (16, 32, 64, 128),
                                   "strides": (1, 2, 2, 2),
                                   "pooling": "flatten"},
        "batch_size": 256, "total_epochs": 30.0,
        "optimizer.warmup_steps": epochs(2), "log_every": 10,
        "checkpoint_every": 150},
    # A user's pictures: ImageNet's network and schedule shape, a batch a
    # single machine holds.
    "imagefolder": {
        "method.backbone": "resnet50", "batch_size": 256,
        "total_epochs": 100.0, "optimizer.warmup_steps": epochs(10)},
    "cifar": {
        "method.backbone": "resnet18",
        "method.backbone_kwargs": {"stem": "cifar"}, "batch_size": 256,
        "total_epochs": 1000.0, "optimizer.warmup_steps": epochs(10),
        "optimizer.lars_rate_after_momentum": True,
        "compute_dtype": "bfloat16"},
    "imagenet100": {
        "method.backbone": "resnet18", "batch_size": 256,
        "total_epochs": 400.0, "optimizer.warmup_steps": epochs(10),
        "optimizer.lars_rate_after_momentum": True,
        "compute_dtype": "bfloat16"},
    "imagenet2012": {
        "method.backbone": "resnet50", "batch_size": 4096,
        "total_epochs": 100.0, "optimizer.warmup_steps": epochs(10),
        "compute_dtype": "bfloat16"},
}

# The optimizer of most mnist5k recipes, found by SimCLR's sweep (README):
# the LARS and SGD settings of the CIFAR recipes, scaled down, left most
# methods at 10 epochs near the random flattened net's kNN (0.933), with
# AdamW they beat raw pixels. Recipes spread it after their own optimizer
# keys and change the rate where a method wanted another.
MNIST5K_ADAMW = {"batch_size": 128, "optimizer.name": "adamw",
                 "optimizer.learning_rate": 4e-3,
                 "optimizer.weight_decay": 1e-4}

# The mnist5k backbone of the two patch tasks, jigsaw and relative_patch:
# small_cnn downsampling once less, so that their 6-7-pixel crops end in a
# 2×2 map instead of 1×1 (whole digits: a 7×7 map, 6,272 features). The
# jigsaw authors made the same change for their small tiles: their released
# Caffe model halves AlexNet's first stride, so that 64-pixel tiles keep a
# 3×3 map. With the usual strides the last layer's taps around a 1×1 map
# only ever see padding: kNN 93.6 / 93.9, below raw pixels' 94.8; with these
# 95.1 / 95.4 (README).
MNIST5K_PATCH_BACKBONE = {"method.backbone_kwargs.strides": (1, 1, 2, 2)}

# Augmentation settings by dataset and by `ssljax.data.augment` preset of
# the method: two symmetric views ("simclr"), two asymmetric ones ("byol")
# or "multicrop". MNIST digits lose their identity when flipped or cropped
# to 8% of their area (SimCLR on mnist5k: crops of (0.3, 1) gave kNN 0.884,
# (0.5, 1) 0.889). On CIFAR, solo-learn's asymmetric recipe drops the blur
# and keeps the solarisation (`augmentations/asymmetric.yaml`), its
# symmetric one keeps the blur at p 0.5 (`symmetric.yaml`), and it trains
# DINO and SwAV with two crops of scale (0.08, 1).
_NO_COLOUR_OPS = {"method.augment.flip_prob": 0.0,
                  "method.augment.blur_prob": 0.0,
                  "method.augment.solarize_prob": 0.0}
_MNIST5K_PAIR = {"method.augment.scale": (0.5, 1.0), **_NO_COLOUR_OPS}
VIEW_RECIPES = {
    ("mnist5k", "simclr"): _MNIST5K_PAIR,
    ("mnist5k", "byol"): _MNIST5K_PAIR,
    # Two global crops only (as solo-learn's CIFAR recipes): small_cnn
    # flattens its last map, whose size is fixed by the 28×28 crop.
    ("mnist5k", "multicrop"): {"method.augment.num_local": 0,
                               "method.augment.global_scale": (0.5, 1.0),
                               **_NO_COLOUR_OPS},
    ("cifar", "byol"): {"method.augment.blur_prob": 0.0},
    ("cifar", "multicrop"): {"method.augment.num_local": 0,
                             "method.augment.global_scale": (0.08, 1.0),
                             "method.augment.blur_prob": 0.0},
}


def parse_arg(arg: str) -> tuple[str, dict[str, Any]]:
  """Splits "preset,key=value,..." into the preset and typed overrides.

  Example:
    >>> parse_arg("cifar10,batch_size=128,optimizer.name=sgd")
    ('cifar10', {'batch_size': 128, 'optimizer.name': 'sgd'})
    >>> parse_arg("mnist5k,method.augment.scale=(0.5,1.0)")[1]
    {'method.augment.scale': (0.5, 1.0)}
  """
  # Split only before `key=`, so tuple values such as (0.5,1.0) survive.
  parts = re.split(r",(?=\s*[\w.]+\s*=)", arg.strip())
  preset = parts[0].strip()
  if preset not in PRESETS:
    raise ValueError(
        f"get_config: `arg` must start with a dataset preset, one of "
        f"{PRESETS}, got {arg!r}.")
  overrides = {}
  for part in parts[1:]:
    key, _, text = part.partition("=")
    overrides[key.strip()] = _literal(text.strip())
  return preset, overrides


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A bare word such as lars.


def dataset_fields(preset: str) -> dict:
  """`config.dataset`: what the method and the input pipeline need."""
  if preset == "imagenet100":
    return dict(_IMAGENET100)
  if preset == "imagefolder":
    # Filled in from the folder by `resolve_dataset` once the path is known.
    return dict(name="imagefolder", path="", image_size=224, num_classes=0,
                train_size=0, mean=data.augment.IMAGENET_MEAN,
                std=data.augment.IMAGENET_STD, compute_stats=False)
  info = data.info(preset)
  return dict(name=info.name, image_size=info.image_shape[0],
              num_classes=info.num_classes, train_size=info.num_train,
              mean=info.mean, std=info.std)


def resolve_dataset(config) -> None:
  """Fills an image folder's facts into `config.dataset` (in place): its
  number of classes and training images, and with `compute_stats` its mean
  and std; the fields that follow them (total_steps, epoch-counted
  settings) follow. Other datasets are left alone.

  Raises:
    ValueError: if `dataset.path` is not set.
  """
  dataset = config.dataset
  if dataset.name != "imagefolder":
    return
  if not dataset.path:
    raise ValueError("imagefolder: set the folder with "
                     "--config.dataset.path=DIR (DIR/train, optionally "
                     "DIR/val).")
  info = data.info("imagefolder", path=dataset.path,
                   image_size=dataset.image_size)
  dataset.num_classes = info.num_classes
  dataset.train_size = info.num_train
  if dataset.compute_stats:
    mean, std = data.folder_stats(dataset.path,
                                  image_size=dataset.image_size)
    dataset.mean, dataset.std = tuple(mean), tuple(std)


def factory_fields(method_name: str) -> ml_collections.ConfigDict:
  """`config.method`: the factory's keyword defaults, and its `name`."""
  fields = {"name": method_name}
  for name, parameter in methods.parameters(methods.get(method_name)).items():
    default = parameter.default
    if default is parameter.empty:
      raise ValueError(f"{method_name}: factory parameter `{name}` has no "
                       f"default; every hyper-parameter needs one.")
    fields[name] = dict(default) if isinstance(default, Mapping) else default
  return ml_collections.ConfigDict(fields)


def base_config(method_name: str, preset: str) -> ml_collections.ConfigDict:
  """The fields every experiment has, before any recipe."""
  config = ml_collections.ConfigDict()
  config.method = factory_fields(method_name)
  config.dataset = ml_collections.ConfigDict(dataset_fields(preset))
  config.batch_size = 256
  config.total_epochs = 100.0
  config.total_steps = (config.get_ref("total_epochs")
                        * _steps_per_epoch(config)).to_int()
  config.seed = 0
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="lars", learning_rate=0.3, weight_decay=1e-6, momentum=0.9,
      warmup_steps=0, exclude_bias_and_norm=True,
      lars_rate_after_momentum=False,
      weight_decay_end=ml_collections.config_dict.placeholder(float),
      clip_grad=0.0, clip_per_parameter=False, bias_lr_scale=1.0,
      constant_lr_parts=()))
  config.checkpoint_every = 1000
  # None: at every checkpoint (see `ssljax.train.evaluation.eval_every`).
  config.eval_every = ml_collections.config_dict.placeholder(int)
  config.log_every = 50
  config.compute_dtype = "float32"
  config.epoch_settings = ()
  _follow(config)
  return config


def _follow(config: ml_collections.ConfigDict) -> None:
  """Method fields that follow other fields: the compute dtype, the
  dataset's statistics, the number of training examples."""
  method = config.method
  if "dtype" in method:
    method.dtype = config.get_ref("compute_dtype")
  if "augment" in method:
    method.augment.mean = config.dataset.get_ref("mean")
    method.augment.std = config.dataset.get_ref("std")
  if "num_examples" in method:
    method.num_examples = config.dataset.get_ref("train_size")


def _steps_per_epoch(config: ml_collections.ConfigDict):
  """train_size // batch_size, as a reference that follows both fields."""
  return config.dataset.get_ref("train_size") // config.get_ref("batch_size")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> None:
  """Sets dotted keys, keeping each field's type; errors name the key."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ValueError(f"get_config: unknown config key `{key}`.")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      fields = sorted(node.keys()) if hasattr(node, "keys") else []
      raise ValueError(
          f"get_config: unknown config key `{key}`; fields there: {fields}.")
    if isinstance(value, Epochs):
      value = (value.count * _steps_per_epoch(config)).to_int()
      if key not in config.epoch_settings:
        config.epoch_settings = (*config.epoch_settings, key)
    if isinstance(value, Cosine):
      # A number field becomes a schedule: replace it, don't retype it.
      del node[leaf]
      value = ml_collections.ConfigDict(dict(
          schedule="cosine", base=value.base, final=value.final,
          steps=config.get_ref("total_steps")))
    try:
      setattr(node, leaf, value)
    except TypeError as e:
      raise ValueError(
          f"get_config: config key `{key}` is a "
          f"{type(node[leaf]).__name__}, got {value!r}: {e}") from None


def get_config(method_name: str, arg: str,
               recipes: Mapping[str, Mapping[str, Any]],
               every_preset: Mapping[str, Any] | None = None
               ) -> ml_collections.ConfigDict:
  """A method's locked config for `arg` (see the module docstring).

  Applied in order: `base_config`, `every_preset` (the method's settings
  for every dataset, e.g. its EMA schedule), the dataset's
  `DATASET_RECIPES` and `VIEW_RECIPES`, the method's recipe, then the
  overrides of `arg`.

  Args:
    method_name: registry name of the method (`ssljax.methods.get`).
    arg: "preset[,key=value...]".
    recipes: the method's published hyper-parameters as {dotted key: value}
      under the keys of `DATASET_RECIPES` (imagefolder borrows
      "imagenet2012").
    every_preset: {dotted key: value} applied before any preset.
  """
  preset, overrides = parse_arg(arg)
  config = base_config(method_name, preset)
  family = "cifar" if preset.startswith("cifar") else preset
  views = config.method.get("augment", {}).get("preset")
  apply_overrides(config, every_preset or {})
  # The dataset's network is a default for factories that take one; a
  # user's own factory without those fields keeps its own.
  apply_overrides(config, {
      k: v for k, v in DATASET_RECIPES[family].items()
      if not k.startswith("method.") or k.split(".")[1] in config.method})
  apply_overrides(config, VIEW_RECIPES.get((family, views), {}))
  if family == "imagefolder":
    apply_overrides(config, {k: v for k, v in recipes["imagenet2012"].items()
                             if k not in _RUN_SIZE_KEYS})
  else:
    apply_overrides(config, recipes[family])
  apply_overrides(config, overrides)
  config.lock()
  return config
