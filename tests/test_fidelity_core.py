"""SimCLR, BYOL, DINO, MoCo v2 and DCL against their official code.

One test per correction in docs/fidelity.md#simclr, #byol, #dino,
#moco_v2 and #dcl, each failing without it: SimCLR's projection head and
summed loss, BYOL's independently drawn target, DINO's head initialisation
and recipes, MoCo v2's head initialisation, per-group (shuffled) BatchNorm
and parameter groups, the zero-initialised residual BatchNorm of the
TF/haiku ResNets; then the network each method's `encode` evaluates, and
the factory-time errors. References are numpy transcriptions of the
official code. Tiny shapes (16×16 images, `tiny_cnn`, heads of 8-64 units).
"""

import functools
import importlib
import inspect

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from _toy_data import shape_images
from configs import byol as byol_config
from configs import dcl as dcl_config
from configs import dino as dino_config
from configs import moco_v2 as moco_config
from configs import simclr as simclr_config
from ssljax import losses, methods, models, train
from ssljax.data import augment

# The module (`ssljax.methods.moco_v2` is also the factory's name there).
moco_lib = importlib.import_module("ssljax.methods.moco_v2")

# Cheap views: crops and flips only (compiles fast).
PLAIN = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0,
         "solarize_prob": 0.0}
PAIR = {"preset": "byol", **PLAIN}
GLOBAL_CROPS = {"preset": "multicrop", "num_local": 0, **PLAIN}
KEY = jax.random.key(0)
# The module (`ssljax.methods.dino` is the factory).
dino_lib = importlib.import_module("ssljax.methods.dino")


def rgb_images(n=8, size=16, seed=0):
  """uint8 [n, size, size, 3] toy shapes."""
  gray, _ = shape_images(np.arange(n) % 4, size, seed)
  return jnp.asarray(np.repeat(gray, 3, axis=-1))


def tree_equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(np.array_equal(x, y)), a, b)))


# ----------------------------------------------------------------- SimCLR ---


def test_simclr_head_is_the_official_projection_head():
  """3 Linear layers without bias, BatchNorm after each (hidden: scale and
  offset; output: a learnable scale only), kernels from N(0, 0.01²)."""
  method = methods.simclr(backbone="tiny_cnn", proj_hidden_dim=64,
                          proj_dim=32, augment=PAIR)
  params, model_state, _ = method.init(KEY, rgb_images())
  head, stats = params["projector"], model_state["projector"]
  layers = head["mlp"]["layers"]
  assert sorted(layers) == ["bn0", "bn1", "linear0", "linear1", "linear2"]
  assert all(set(layers[f"linear{i}"]) == {"kernel"} for i in range(3))
  assert sorted(layers["bn0"]) == ["bias", "scale"]
  assert sorted(stats["mlp"]["layers"]) == ["bn0", "bn1", "bn2"]
  np.testing.assert_array_equal(head["scale"], np.ones(32))
  kernel = np.asarray(layers["linear1"]["kernel"])  # 4,096 draws
  np.testing.assert_allclose(kernel.std(), 0.01, rtol=0.05)
  # The v1 paper's / solo-learn's head stays available.
  plain = methods.simclr(backbone="tiny_cnn", proj_hidden_dim=64,
                         proj_dim=32, proj_layers=2, proj_last_bn=False,
                         augment=PAIR)
  params, _, _ = plain.init(KEY, rgb_images())
  assert "scale" not in params["projector"]
  assert "bias" in params["projector"]["mlp"]["layers"]["linear1"]


def official_simclr_loss(hidden, temperature):
  """google-research/simclr `add_contrastive_loss` on one replica."""
  large_num = 1e9
  hidden = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
  h1, h2 = np.split(hidden, 2)
  n = h1.shape[0]
  labels = np.eye(n, 2 * n)
  mask = np.eye(n)

  def cross_entropy(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -(labels * log_probs).sum(axis=1)

  aa = h1 @ h1.T / temperature - mask * large_num
  bb = h2 @ h2.T / temperature - mask * large_num
  ab, ba = h1 @ h2.T / temperature, h2 @ h1.T / temperature
  loss_a = cross_entropy(np.concatenate([ab, aa], axis=1))
  loss_b = cross_entropy(np.concatenate([ba, bb], axis=1))
  return np.mean(loss_a + loss_b)


def test_simclr_loss_sums_the_two_views_as_the_official_code():
  z = np.random.default_rng(0).normal(size=(12, 5))
  official = official_simclr_loss(z, 0.1)
  np.testing.assert_allclose(
      2 * losses.nt_xent(z[:6], z[6:], temperature=0.1), official, rtol=1e-5)
  # The method's loss is that sum by default, the paper's mean on request.
  images = {"image": rgb_images()}
  values = {}
  for sum_views in (True, False):
    method = methods.simclr(backbone="tiny_cnn", proj_hidden_dim=16,
                            proj_dim=8, augment=PAIR, sum_views=sum_views)
    params, model_state, state = method.init(KEY, images["image"])
    values[sum_views] = float(method.loss(params, model_state, state, images,
                                          jax.random.key(1), 0)[0])
  np.testing.assert_allclose(values[True], 2 * values[False], rtol=1e-6)


def test_dcl_shares_simclrs_official_head_and_summed_loss():
  images = rgb_images()
  values = {}
  for sum_views in (True, False):
    method = methods.dcl(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
                         augment=PAIR, sum_views=sum_views)
    params, model_state, state = method.init(KEY, images)
    values[sum_views] = float(method.loss(params, model_state, state,
                                          {"image": images},
                                          jax.random.key(1), 0)[0])
  assert "scale" in params["projector"]
  np.testing.assert_allclose(values[True], 2 * values[False], rtol=1e-6)


@pytest.mark.parametrize("module", [simclr_config, byol_config, dcl_config])
def test_imagenet_recipes_zero_init_the_residual_batchnorm(module):
  """The TF SimCLR ResNet (`init_zero=True`) and haiku's BlockV1 (BYOL)
  start each block's last BatchNorm scale at 0."""
  config = module.get_config("imagenet2012")
  assert config.method.backbone == "resnet50"
  assert config.method.backbone_kwargs.zero_init_residual is True
  assert config.optimizer.exclude_bias_and_norm is True
  # solo-learn's recipes keep its 2-layer head, mean loss and copied target.
  cifar = module.get_config("cifar10").method
  if "proj_layers" in cifar:
    assert (cifar.proj_layers, cifar.proj_last_bn, cifar.sum_views) == (
        2, False, False)
  if "target_init" in cifar:
    assert cifar.target_init == "copy"


def test_dcl_imagenet_recipe_is_simclrs_at_the_papers_batch_and_length():
  config = dcl_config.get_config("imagenet2012")
  official = simclr_config.get_config("imagenet2012")
  assert (config.batch_size, config.total_epochs) == (256, 200.0)
  assert config.optimizer.to_dict() == {
      **official.optimizer.to_dict(),
      "warmup_steps": 10 * (config.dataset.train_size // 256)}
  assert config.method.proj_layers == 3 and config.method.sum_views


# ------------------------------------------------------------------- BYOL ---


def test_byol_target_is_its_own_random_draw():
  """deepmind-research/byol `_make_initial_state` inits the online and the
  target parameters with two keys."""
  kwargs = dict(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
                pred_hidden_dim=16, augment=PAIR)
  images = rgb_images()
  params, _, state = methods.byol(**kwargs).init(KEY, images)
  target = state.target.params
  assert sorted(target) == ["backbone", "projector"]
  assert jax.tree.structure(target["backbone"]) == jax.tree.structure(
      params["backbone"])
  for part in ("backbone", "projector"):
    for online, drawn in zip(jax.tree.leaves(params[part]),
                             jax.tree.leaves(target[part])):
      if online.ndim > 1:  # kernels; BatchNorm scales start at 1 in both
        assert not np.array_equal(online, drawn)
        np.testing.assert_allclose(np.std(drawn), np.std(online), rtol=0.5)
  params, _, state = methods.byol(**kwargs, target_init="copy").init(KEY,
                                                                     images)
  assert tree_equal(state.target.params,
                    {k: params[k] for k in ("backbone", "projector")})


# ------------------------------------------------------------------- DINO ---


def test_dino_head_starts_as_the_official_dino_head():
  """MLP kernels N(0, 0.02²) untruncated (timm's trunc_normal_ cuts at ±2
  absolute), biases 0; the last layer's V ~ U(±1/√bottleneck) (PyTorch's
  Linear default); the teacher a copy of the student."""
  method = methods.dino(backbone="tiny_cnn", hidden_dim=64,
                        bottleneck_dim=64, out_dim=512, augment=GLOBAL_CROPS)
  params, _, state = method.init(KEY, rgb_images())
  head = params["projector"]
  hidden = np.asarray(head["mlp"]["layers"]["linear1"]["kernel"])
  np.testing.assert_allclose(hidden.std(), 0.02, rtol=0.05)
  assert np.abs(hidden).max() > 2 * 0.02  # no truncation at two std
  np.testing.assert_array_equal(head["mlp"]["layers"]["linear1"]["bias"], 0.0)
  last = np.asarray(head[models.DINO_LAST_LAYER]["kernel"])
  bound = 1 / np.sqrt(64)
  assert np.abs(last).max() <= bound
  np.testing.assert_allclose(last.std(), bound / np.sqrt(3), rtol=0.05)
  assert tree_equal(state.target.params, params)


def test_dino_factory_defaults_are_main_dinos():
  defaults = {name: p.default for name, p in
              inspect.signature(methods.dino).parameters.items()}
  assert defaults["backbone"] == "vit_small"  # `--arch vit_small`
  assert (defaults["warmup_teacher_temp"], defaults["teacher_temp"],
          defaults["warmup_teacher_temp_steps"]) == (0.04, 0.04, 0)
  assert (defaults["out_dim"], defaults["norm_last_layer"],
          defaults["momentum"]) == (65536, True, 0.996)


def test_dino_student_vit_drops_paths_and_the_teacher_does_not():
  """`main_dino.py` builds the student ViT with `--drop_path_rate` 0.1 and
  the teacher without; its ResNets have none. Its patch embedding keeps
  PyTorch's Conv2d draw."""
  assert inspect.signature(methods.dino).parameters[
      "drop_path_rate"].default is None
  assert dino_lib.student_drop_path("vit_small", None, None) == 0.1
  assert dino_lib.student_drop_path("resnet50", None, None) == 0.0
  images = rgb_images(size=16)

  def two_steps(rate):
    method = methods.dino(
        backbone="vit_tiny", backbone_kwargs={"patch_size": 4,
                                              "image_size": 16, "depth": 2},
        hidden_dim=16, bottleneck_dim=8, out_dim=32, drop_path_rate=rate,
        augment={**GLOBAL_CROPS, "global_size": 16})
    params, model_state, state = method.init(KEY, images)
    batch, rng = {"image": images}, jax.random.key(1)
    loss, out = method.loss(params, model_state, state, batch, rng, 0)
    # The same batch, views and parameters; only the student's state moved.
    again, out_again = method.loss(params, out.model_state, state, batch,
                                   rng, 1)
    np.testing.assert_array_equal(out.update.teacher_logits,
                                  out_again.update.teacher_logits)
    return float(loss), float(again)

  # The ViT's patch embedding keeps PyTorch's Conv2d draw, as DINO's.
  method = methods.dino(backbone="vit_tiny", backbone_kwargs={
      "patch_size": 4, "image_size": 16, "depth": 1}, hidden_dim=16,
                        bottleneck_dim=8, out_dim=32,
                        augment={**GLOBAL_CROPS, "global_size": 16})
  patch = method.init(KEY, images)[0]["backbone"]["patch_embed"]
  bound = 1 / np.sqrt(4 * 4 * 3)
  assert np.abs(np.asarray(patch["bias"])).max() <= bound
  np.testing.assert_allclose(np.asarray(patch["kernel"]).std(),
                             bound / np.sqrt(3), rtol=0.1)
  first, second = two_steps(0.5)
  assert first != second  # the student's paths were drawn anew
  first, second = two_steps(0.0)
  assert first == second  # no BatchNorm in a ViT: nothing else moves
  with pytest.raises(ValueError, match="drop_path_rate.*ViT preset"):
    methods.dino(backbone="resnet50", drop_path_rate=0.1)
  with pytest.raises(ValueError, match="not `backbone_kwargs`"):
    methods.dino(backbone_kwargs={"drop_path_rate": 0.1})
  with pytest.raises(ValueError, match="drop_path_rate"):
    methods.dino(drop_path_rate=1.5)


def _steps(config, epochs):
  return int(epochs * (config.dataset.train_size // config.batch_size))


def test_dino_resnet50_recipe_is_the_readme_command():
  config = dino_config.get_config("imagenet2012")
  method, opt = config.method, config.optimizer
  assert method.backbone == "resnet50" and config.batch_size == 512
  assert (opt.name, opt.learning_rate, opt.weight_decay,
          opt.weight_decay_end) == ("sgd", 0.03, 1e-4, 1e-4)
  assert tuple(method.augment.global_scale) == (0.14, 1.0)
  assert tuple(method.augment.local_scale) == (0.05, 0.14)
  # The command leaves the teacher at the defaults: 0.04, no warm-up.
  assert (method.warmup_teacher_temp, method.teacher_temp,
          method.warmup_teacher_temp_steps) == (0.04, 0.04, 0)
  assert (opt.clip_grad, opt.clip_per_parameter) == (3.0, True)
  assert method.freeze_last_layer_steps == _steps(config, 1)
  assert opt.warmup_steps == _steps(config, 10)


def test_dino_vit_preset_uses_the_vit_schedule():
  config = dino_config.get_config("imagenet2012-vit,batch_size=1024")
  method, opt = config.method, config.optimizer
  assert config.dataset.name == "imagenet2012" and config.batch_size == 1024
  assert method.backbone == "vit_small"
  assert method.backbone_kwargs.patch_size == 16
  assert (opt.name, opt.learning_rate, opt.weight_decay,
          opt.weight_decay_end) == ("adamw", 5e-4, 0.04, 0.4)
  assert (opt.clip_grad, opt.clip_per_parameter) == (3.0, True)
  assert (method.warmup_teacher_temp, method.teacher_temp) == (0.04, 0.07)
  assert method.warmup_teacher_temp_steps == _steps(config, 30)
  assert method.freeze_last_layer_steps == _steps(config, 1)
  assert opt.warmup_steps == _steps(config, 10)
  assert methods.build(config).name == "dino"


# ---------------------------------------------------------------- MoCo v2 ---


def test_moco_head_starts_with_pytorchs_linear_draw():
  """nn.Linear's default: weights and biases ~ U(±1/√fan_in)."""
  method = methods.moco_v2(backbone="tiny_cnn", proj_hidden_dim=64,
                           proj_dim=32, queue_size=16, augment=PAIR)
  params, _, state = method.init(KEY, rgb_images())
  layers = params["projector"]["layers"]
  for name, fan_in in (("linear0", 8), ("linear1", 64)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in (layers[name]["kernel"], layers[name]["bias"]):
      assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > bound / 2
  np.testing.assert_allclose(np.std(layers["linear1"]["kernel"]),
                             1 / np.sqrt(3 * 64), rtol=0.05)
  assert tree_equal(state.target.params["projector"], params["projector"])


def test_moco_imagenet_recipe_decays_every_parameter_with_per_gpu_bn():
  config = moco_config.get_config("imagenet2012")
  assert config.optimizer.exclude_bias_and_norm is False
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.optimizer.weight_decay, config.optimizer.warmup_steps) == (
              "sgd", 0.03, 1e-4, 0)
  assert config.method.bn_groups == 8 and config.batch_size == 256
  assert not config.method.symmetric
  # Weight decay now reaches a bias: with a zero gradient it still shrinks.
  tx = train.make_optimizer(ml_collections.ConfigDict(dict(
      batch_size=256, total_steps=10, optimizer=config.optimizer.to_dict())))
  params = {"bias": jnp.ones(3)}
  updates, _ = tx.update({"bias": jnp.zeros(3)}, tx.init(params), params)
  assert bool(jnp.all(updates["bias"] < 0))


def _batchnorm_net():
  net = models.projector(None, 6, 4)
  x = jax.random.normal(jax.random.key(3), (8, 5))
  params, state = net.init(jax.random.key(4), x)
  return net, params, state, x


def test_grouped_batchnorm_normalises_each_slice_on_its_own():
  net, params, state, x = _batchnorm_net()
  out, new_state = moco_lib.grouped(net, 2).apply(params, state, x,
                                                  train=True)
  first, first_state = net.apply(params, state, x[:4], train=True)
  second, _ = net.apply(params, state, x[4:], train=True)
  np.testing.assert_allclose(out, np.concatenate([first, second]), atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6),
               new_state, first_state)  # rank 0's running statistics
  whole, _ = net.apply(params, state, x, train=True)
  assert not np.allclose(out, whole, atol=1e-3)


def test_shuffled_batchnorm_slices_a_permutation_and_restores_the_order():
  net, params, state, x = _batchnorm_net()
  shuffle = jax.random.key(5)
  out, _ = moco_lib.grouped(net, 2, shuffle).apply(params, state, x,
                                                   train=True)
  order = np.asarray(jax.random.permutation(shuffle, 8))
  expected = np.empty((8, 4), np.float32)
  for part in (order[:4], order[4:]):
    expected[part] = net.apply(params, state, x[part], train=True)[0]
  np.testing.assert_allclose(out, expected, atol=1e-5)
  with pytest.raises(ValueError, match="bn_groups"):
    moco_lib.grouped(net, 3).apply(params, state, x, train=True)


def _moco_step_state(data_devices):
  config = ml_collections.ConfigDict(dict(
      batch_size=16, total_steps=4, mesh=dict(data=data_devices),
      optimizer=dict(name="sgd", learning_rate=0.03, weight_decay=1e-4,
                     warmup_steps=0, exclude_bias_and_norm=False)))
  method = methods.moco_v2(backbone="tiny_cnn", proj_hidden_dim=16,
                           proj_dim=8, queue_size=32, bn_groups=2,
                           augment=PAIR)
  mesh, tx = train.make_mesh(config), train.make_optimizer(config)
  images = rgb_images(16)
  state = train.create_train_state(method, KEY, images, tx)
  step = train.make_train_step(config, method, tx, mesh)
  batch = jax.device_put({"image": images}, train.data_sharded(mesh))
  for _ in range(2):
    state, metrics = step(state, batch)
  return jax.device_get((state.params, state.method_state.queue.buffer,
                         metrics["loss"]))


def test_moco_shuffled_batchnorm_trains_alike_on_eight_devices_and_one():
  one, eight = _moco_step_state(1), _moco_step_state(8)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-5), eight, one)


# ------------------------------------------------------- evaluated network ---


def _eval_features(backbone_params, backbone_state, images):
  net = models.get("tiny_cnn", dtype=jnp.float32, param_dtype=jnp.float32)
  x = augment.normalize(augment.to_float(images), mean=augment.IMAGENET_MEAN,
                        std=augment.IMAGENET_STD)
  return net.apply(backbone_params, backbone_state, x, train=False)[0]


EVALUATED = {
    "simclr": (dict(proj_hidden_dim=16, proj_dim=8, augment=PAIR), False),
    "dcl": (dict(proj_hidden_dim=16, proj_dim=8, augment=PAIR), False),
    "byol": (dict(proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=16,
                  augment=PAIR), False),
    "moco_v2": (dict(proj_hidden_dim=16, proj_dim=8, queue_size=16,
                     augment=PAIR), False),
    "moco_v3": (dict(proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=16,
                     augment=PAIR), False),
    "pcl": (dict(proj_hidden_dim=16, proj_dim=8, queue_size=16,
                 num_examples=8, num_clusters=(2,), augment=PAIR), False),
    "dino": (dict(hidden_dim=16, bottleneck_dim=8, out_dim=32,
                  augment=GLOBAL_CROPS), True),
}


def _momentum_network(state):
  """The momentum (target) network of a method state, None without one."""
  return getattr(state, "target", None) or getattr(
      getattr(state, "moco", None), "target", None)


@pytest.mark.parametrize("name", sorted(EVALUATED))
def test_encode_is_the_network_the_official_evaluation_uses(name):
  """DINO: the teacher (`eval_linear.py --checkpoint_key teacher`); the
  others: the online (query) backbone."""
  kwargs, teacher = EVALUATED[name]
  method = methods.get(name)(backbone="tiny_cnn", **kwargs)
  images = rgb_images()
  params, model_state, state = method.init(KEY, images)
  # Online and momentum networks apart, as after training.
  params = dict(params, backbone=jax.tree.map(lambda w: w * 1.5,
                                              params["backbone"]))
  features = method.encode(params, model_state, state, images)
  target = _momentum_network(state)
  assert target is not None or not teacher
  if teacher:
    tree, stats = target.params, target.model_state
  else:
    tree, stats = params, model_state
  expected = _eval_features(tree["backbone"], stats["backbone"], images)
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
  if target is not None:
    other = (params, model_state) if teacher else target
    assert not np.allclose(features, _eval_features(
        other[0]["backbone"], other[1]["backbone"], images), atol=1e-4)


# ------------------------------------------------------------------ errors ---


@pytest.mark.parametrize("name, kwargs, match", [
    ("simclr", dict(proj_layers=0), "proj_layers"),
    ("simclr", dict(temperature=0.0), "temperature"),
    ("simclr", dict(view_batchnorm="split"), "view_batchnorm"),
    ("dcl", dict(sigma=-1.0), "sigma"),
    ("byol", dict(momentum=1.5), "momentum"),
    ("byol", dict(target_init="zeros"), "target_init"),
    ("byol", dict(pred_hidden_dim=0), "pred_hidden_dim"),
    ("dino", dict(out_dim=0), "out_dim"),
    ("dino", dict(teacher_temp=0.0), "teacher_temp"),
    ("dino", dict(freeze_last_layer_steps=-1), "freeze_last_layer_steps"),
    ("dino", dict(center_momentum=2.0), "center_momentum"),
    ("moco_v2", dict(queue_size=0), "queue_size"),
    ("moco_v2", dict(bn_groups=0), "bn_groups"),
    ("moco_v2", dict(temperature=-0.2), "temperature"),
])
def test_bad_hyper_parameters_fail_at_factory_time(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    methods.get(name)(backbone="tiny_cnn", **kwargs)


@pytest.mark.parametrize("name, kwargs, global_scale, local_scale, locals_", [
    # dino main_dino.py: 2 × 224 at (0.4, 1), 8 × 96 at (0.05, 0.4).
    ("dino", dict(backbone="tiny_cnn"), (0.4, 1.0), (0.05, 0.4), 8),
    # swav main_swav.py: size_crops 224 96, nmb_crops 2 6, scales 0.14 / 0.05.
    ("swav", dict(backbone="tiny_cnn"), (0.14, 1.0), (0.05, 0.14), 6),
    # ibot's ViT-S/16 command: 10 local crops, global (0.25, 1).
    ("ibot", {}, (0.25, 1.0), (0.05, 0.25), 10),
])
def test_multi_crop_boxes_are_the_official_ones(name, kwargs, global_scale,
                                                local_scale, locals_):
  """The crops a variable-size pipeline draws from the original picture
  (`Method.crops`, read by `ssljax.data.load(..., crops=...)`)."""
  specs = methods.get(name)(**kwargs).crops(224)
  got = [(s.size, tuple(s.scale), tuple(s.ratio)) for s in specs]
  ratio = (3 / 4, 4 / 3)
  assert got == ([(224, global_scale, ratio)] * 2
                 + [(96, local_scale, ratio)] * locals_)
