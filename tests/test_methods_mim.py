"""MAE, iBOT and I-JEPA as `Method`s: training through `make_train_step`,
8 fake devices against one, bf16 against f32, their wiring (MAE's targets,
iBOT's masked means, centres, KoLeo and Sinkhorn-Knopp codes, the EMA
targets, the evaluated networks), the configs and bad hyper-parameters.

Tiny shapes: ViT-Tiny with one block on 16×16 images in patches of 4; most
of the time is compiling one train step per method.
"""

import functools
import importlib
import inspect
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from _toy_data import alternating_batches, shape_images
from test_linear_eval import run_cli
from configs import common, ibot as ibot_config
from ssljax import losses, methods, models, state as state_lib, train
from ssljax.evaluate import protocols
from ssljax.methods import _mim, _shared
from ssljax.methods.ibot import IBOTState
from ssljax.methods.ijepa import IJEPAState

NAMES = ("mae", "ibot", "ijepa")
BATCH = 16
VIT = {"patch_size": 4, "image_size": 16, "depth": 1}
CHEAP = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0,
         "solarize_prob": 0.0}
TINY = {
    "mae": dict(decoder_dim=32, decoder_depth=1, decoder_heads=2,
                augment={"preset": "byol", "scale": (0.5, 1.0), **CHEAP}),
    # The centres are held (tested on their own below): as they learn the
    # teacher's mean its targets flatten and the loss rises for reasons
    # other than learning, as DINO's test notes.
    "ibot": dict(out_dim=32, hidden_dim=32, bottleneck_dim=16,
                 center_momentum=1.0, patch_center_momentum=1.0,
                 freeze_last_layer_steps=2,
                 augment={"preset": "multicrop", "num_local": 2, **CHEAP}),
    "ijepa": dict(predictor_dim=24, predictor_depth=1, min_keep=2,
                  augment={"preset": "byol", **CHEAP}),
}
LEARNING_RATE = {"mae": 1e-2, "ibot": 3e-3, "ijepa": 3e-3}


def build(name, **overrides):
  kwargs = {"backbone": "vit_tiny", "backbone_kwargs": VIT, **TINY[name],
            **overrides}
  return getattr(methods, name)(**kwargs)


def toy_batches(n_steps):
  images, labels = shape_images(np.arange(2 * BATCH) % 4, 16)
  return alternating_batches(images, labels, BATCH, n_steps)


def optimizer_config(name="adamw", learning_rate=3e-3, devices=1):
  return ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, mesh=dict(data=devices),
      optimizer=dict(name=name, learning_rate=learning_rate,
                     weight_decay=0.0, momentum=0.9, warmup_steps=0)))


def run_steps(method, steps, config):
  """Host copies of the train states before/after each step, and the
  metrics."""
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, frozen=method.frozen)
  state = train.create_train_state(method, jax.random.key(0),
                                   steps[0]["image"], tx)
  step = train.make_train_step(config, method, tx, mesh)
  history, metrics = [jax.device_get(state)], []
  state = jax.device_put(state, train.replicated(mesh))
  for batch in steps:
    state, m = step(state, jax.device_put(batch, train.data_sharded(mesh)))
    history.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return history, metrics


@functools.lru_cache(maxsize=None)
def trained(name):
  """12 Adam steps of each method on one device (shared by the tests)."""
  return run_steps(build(name), toy_batches(12),
                   optimizer_config(learning_rate=LEARNING_RATE[name]))


def tree_allclose(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float64), np.asarray(y, np.float64), **tol), a, b)


# ------------------------------------------------------------- training ---


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss(name):
  history, metrics = trained(name)
  values = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(values)), values
  assert values[-4:].mean() < values[:4].mean(), values
  assert int(history[-1].step) == 12


@pytest.mark.parametrize("name", ["ibot", "ijepa"])
def test_the_target_is_an_ema_of_the_online_network(name):
  history, metrics = trained(name)
  for t in range(len(metrics)):
    before = history[t].method_state.target.params
    after = history[t + 1].method_state.target.params
    m = float(metrics[t]["momentum"])
    np.testing.assert_allclose(m, 0.996, rtol=1e-6)
    online = {k: history[t + 1].params[k] for k in before}
    tree_allclose(after, jax.tree.map(lambda a, b: m * a + (1 - m) * b,
                                      before, online), rtol=1e-5, atol=1e-7)


def test_ibot_freezes_the_last_layer_and_holds_the_centres():
  history, _ = trained("ibot")
  for t in range(4):
    kernels = [h.params["projector"]["last_layer"]["kernel"]
               for h in history[t:t + 2]]
    assert np.array_equal(*kernels) == (t < 2), t
    # center_momentum = 1: the centres stay at 0.
    assert not np.any(history[t + 1].method_state.center)
    assert not np.any(history[t + 1].method_state.patch_center)


@pytest.mark.parametrize("name", ["ibot", "ijepa"])
def test_state_round_trips_through_a_checkpoint(name, tmp_path):
  # iBOT's student carries its stochastic-depth RNG stream in model_state.
  state = trained(name)[0][-1]
  assert type(state.method_state) is {"ibot": IBOTState,
                                      "ijepa": IJEPAState}[name]
  config = ml_collections.ConfigDict(dict(seed=0))
  with train.Checkpointer(str(tmp_path)) as saver:
    saver.save(12, state, {}, config)
    saver.wait()
    restored, _ = saver.restore(config, jax.eval_shape(lambda: state),
                                data=False)
  assert type(restored.method_state) is type(state.method_state)
  keys = lambda s: jax.tree.map(  # noqa: E731
      lambda x: jax.random.key_data(x) if jnp.issubdtype(
          x.dtype, jax.dtypes.prng_key) else x, s)
  tree_allclose(keys(restored), keys(state), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_eight_devices_equal_one(name):
  """Same global batch and key: the masks, views and every reduction are
  those of the global batch, so two SGD steps on 8 devices give the
  single-device parameters and state."""
  assert jax.device_count() == 8
  runs = {devices: run_steps(
      build(name), toy_batches(2),
      optimizer_config("sgd", 0.5, devices)) for devices in (8, 1)}
  (history8, metrics8), (history1, metrics1) = runs[8], runs[1]
  for m8, m1 in zip(metrics8, metrics1):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)

  def close(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(x, y, rtol=1e-5,
                               atol=1e-5 * max(1.0, np.abs(y).max()))

  for part in ("params", "method_state"):
    jax.tree.map(close, getattr(history8[-1], part),
                 getattr(history1[-1], part))


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_loss_is_close_to_float32(name):
  batch = toy_batches(1)[0]
  values = {}
  for dtype in ("float32", "bfloat16"):
    method = build(name, dtype=dtype)
    params, model_state, method_state = method.init(jax.random.key(0),
                                                    batch["image"])
    values[dtype] = jax.jit(lambda p: method.loss(
        p, model_state, method_state, batch, jax.random.key(1), 0)[0])(
            params)
    assert values[dtype].dtype == jnp.float32
  np.testing.assert_allclose(values["bfloat16"], values["float32"],
                             rtol=5e-2)


# --------------------------------------------------------------- wiring ---


def _loss(method, batch):
  """The jitted loss at step 0 with key 1, and the initial states."""
  states = method.init(jax.random.key(0), batch["image"])
  value, out = jax.jit(method.loss)(*states, batch, jax.random.key(1), 0)
  return value, out, states


def test_mae_reconstructs_the_masked_patches_of_the_view():
  """The loss is MSE on the normalised pixels of the masked patches of the
  view, predicted from the visible ones: recomputed from the public parts
  with the same keys."""
  method = build("mae", mask_ratio=0.5)
  batch = toy_batches(1)[0]
  value, out, (params, model_state, _) = _loss(method, batch)
  view_rng, mask_rng = jax.random.split(jax.random.key(1))
  x = _shared.views(TINY["mae"]["augment"]).make(
      view_rng, batch, count=1)[0]
  masking = models.random_masking(mask_rng, BATCH, 16, 0.5)
  vit = models.vit_tiny(**VIT, pos_embed="sincos")
  tokens, _ = vit.apply(params["backbone"], {}, x, train=True,
                        keep=masking.keep, tokens=True)
  decoder = models.token_predictor(192, 16, dim=32, depth=1, num_heads=2,
                                   cls_token=True)
  prediction, _ = decoder.apply(params["decoder"], {}, tokens, train=True,
                                grid=(4, 4), context_index=masking.keep,
                                target_index=masking.masked)
  # Full-length, as the official decoder's output: loss on masked patches.
  full = jnp.zeros((BATCH, 16, 16)).at[
      jnp.arange(BATCH)[:, None], masking.masked].set(prediction)
  target = np.asarray(models.patchify(x, 4), np.float64)
  target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
      target.var(-1, ddof=1, keepdims=True) + 1e-6)
  mask = np.asarray(masking.mask, np.float64)
  want = np.sum(mask * np.mean((np.asarray(full) - target) ** 2, -1)) / \
      mask.sum()
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(out.embeddings, tokens[:, 0], atol=1e-5)


def test_ibot_patch_term_vanishes_without_masked_patches_and_koleo_adds():
  batch = toy_batches(1)[0]
  unmasked = build("ibot", pred_ratio=(0.0,), pred_ratio_var=(0.0,))
  _, out, _ = _loss(unmasked, batch)
  assert float(out.metrics["patch_loss"]) == 0.0
  plain, with_koleo = (build("ibot", koleo_weight=w) for w in (0.0, 0.25))
  v0, _, _ = _loss(plain, batch)
  v1, out1, _ = _loss(with_koleo, batch)
  np.testing.assert_allclose(v1 - v0, 0.25 * out1.metrics["koleo"],
                             rtol=1e-4)


def dinov2_sinkhorn(scores, temperature, iterations=3):
  """DINOv2's `sinkhorn_knopp_teacher` (one process), in numpy."""
  q = np.exp(np.float64(scores) / temperature).T
  b, k = q.shape[1], q.shape[0]
  q /= q.sum()
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def test_masked_sinkhorn_is_dinov2s_on_the_masked_tokens():
  scores = np.random.default_rng(0).normal(size=(10, 5))
  valid = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], bool)
  codes = np.asarray(_mim.masked_sinkhorn(jnp.asarray(scores, jnp.float32),
                                          jnp.asarray(valid), epsilon=0.5))
  np.testing.assert_allclose(codes[valid],
                             dinov2_sinkhorn(scores[valid], 0.5), rtol=1e-4)
  np.testing.assert_allclose(codes[~valid], 0.2)
  # Over every row it is the library's Sinkhorn (SwAV's order).
  np.testing.assert_allclose(
      _mim.masked_sinkhorn(jnp.asarray(scores, jnp.float32),
                           jnp.ones(10, bool), epsilon=0.5),
      state_lib.sinkhorn(jnp.asarray(scores, jnp.float32), epsilon=0.5),
      rtol=1e-4)


def test_ibot_sinkhorn_knopp_centering_uses_the_codes():
  """DINOv2's option: the teacher's distributions are the codes, so the
  centres do not enter the loss and stay put after the step."""
  batch = toy_batches(1)[0]
  method = build("ibot", centering="sinkhorn_knopp")
  value, out, (params, model_state, method_state) = _loss(method, batch)
  shifted = method_state._replace(center=method_state.center + 3.0,
                                  patch_center=method_state.patch_center - 1)
  again, _ = jax.jit(method.loss)(params, model_state, shifted, batch,
                                  jax.random.key(1), 0)
  np.testing.assert_allclose(again, value, rtol=1e-6)
  _, new = method.post_update(params, shifted, out.update, 0)
  np.testing.assert_array_equal(new.center, shifted.center)
  # With centring, c ← m·c + (1 − m)·mean of the teacher's outputs.
  centred = build("ibot", center_momentum=0.5, patch_center_momentum=0.25)
  _, out, (params, _, method_state) = _loss(centred, batch)
  _, new = centred.post_update(params, method_state, out.update, 0)
  np.testing.assert_allclose(new.center, 0.5 * out.update.cls_mean[0],
                             rtol=1e-6)
  np.testing.assert_allclose(new.patch_center,
                             0.75 * out.update.patch_mean[0], rtol=1e-6)


def test_mae_encode_pools_the_cls_token_or_the_patch_tokens():
  images = toy_batches(1)[0]["image"]
  features = {}
  for pool in ("cls", "mean"):
    method = build("mae", eval_pool=pool)
    states = method.init(jax.random.key(0), images)
    features[pool] = jax.jit(method.encode)(*states, images)
  vit = models.vit_tiny(**VIT, pos_embed="sincos")
  x = (images / 255.0 - 0.1307) / 0.3081  # MNIST's default statistics
  tokens, _ = vit.apply(states[0]["backbone"], {}, jnp.asarray(x, jnp.float32),
                        train=False, tokens=True)
  np.testing.assert_allclose(features["cls"], tokens[:, 0], atol=1e-5)
  np.testing.assert_allclose(features["mean"], tokens[:, 1:].mean(1),
                             atol=1e-5)


@pytest.mark.parametrize("name", ["ibot", "ijepa"])
def test_encode_reads_the_target_network(name):
  method = build(name)
  images = toy_batches(1)[0]["image"]
  params, model_state, method_state = method.init(jax.random.key(0), images)
  encode = jax.jit(method.encode)
  features = encode(params, model_state, method_state, images)
  assert features.shape == (BATCH, 192)
  moved = jax.tree.map(lambda x: x + 1.0, params)
  np.testing.assert_allclose(
      encode(moved, model_state, method_state, images), features)
  target = method_state.target._replace(
      params=jax.tree.map(lambda x: x * 1.5, method_state.target.params))
  changed = encode(params, model_state,
                          method_state._replace(target=target), images)
  assert not np.allclose(changed, features)


@pytest.mark.parametrize("name,kwargs", [("mae", {}),
                                         ("mae", {"eval_pool": "mean"}),
                                         ("ibot", {}), ("ijepa", {})])
def test_finetuning_starts_from_the_network_encode_evaluates(name, kwargs):
  # The fine-tuned network is the method's own ViT (MAE's sin-cos embedding
  # and pooling, iBOT's mask token, I-JEPA's mean pool) with the weights
  # `encode` reads: at the start its head sees exactly `encode`'s features.
  # Two blocks: the first has no stochastic depth (rates 0 ... 0.1).
  method = build(name, backbone_kwargs={**VIT, "depth": 2}, **kwargs)
  images = toy_batches(1)[0]["image"]
  params, model_state, method_state = method.init(jax.random.key(0), images)
  online = params["backbone"]
  if hasattr(method_state, "target"):  # Moved, to tell it from the online.
    target = method_state.target._replace(params=jax.tree.map(
        lambda x: x * 1.1, method_state.target.params))
    method_state = method_state._replace(target=target)
    online = target.params["backbone"]
  mean, std = (0.1307,), (0.3081,)
  weights = protocols.encoder_weights(
      method, protocols.backbone_of(None, method), params, model_state,
      method_state, images, mean=mean, std=std)
  assert weights[0] is online
  classifier = protocols.finetune_classifier(
      protocols.backbone_of(None, method, drop_path_rate=0.1), *weights,
      num_classes=4, mean=mean, std=std, layer_decay=0.65)
  ft_params, ft_state = classifier.init(jax.random.key(1), classifier.source,
                                        images)
  logits, _ = jax.jit(functools.partial(classifier.apply, train=False))(
      ft_params, ft_state, (), images)
  features = jax.jit(method.encode)(params, model_state, method_state, images)
  head = ft_params["head"]
  np.testing.assert_allclose(logits, features @ head.weights + head.bias,
                             rtol=1e-4, atol=1e-6)
  # Stochastic depth acts in train mode only.
  dropped, _ = classifier.apply(ft_params, ft_state, (), images, train=True)
  assert not np.allclose(dropped, logits)


def test_ibot_fine_tunes_from_the_command_line(tmp_path):
  # The real path: a pre-training run of the mnist5k recipe, then
  # experiments/finetune.py on its workdir.
  config = ibot_config.get_config(
      "mnist5k,total_steps=2,batch_size=32,checkpoint_every=2,log_every=1")
  config.unlock()
  config.method.backbone_kwargs = {"patch_size": 7, "image_size": 28,
                                   "depth": 1}
  config.data_dir = str(tmp_path / "data")
  train.train(config, str(tmp_path / "run"))
  line = run_cli("finetune.py", f"--workdir={tmp_path / 'run'}",
                 "--label_fraction=0.1", "--protocol.epochs=1",
                 "--protocol.batch_size=64",
                 "--protocol.optimizer.warmup_epochs=0")
  assert line.startswith("ibot on mnist5k, step 2: finetune_top1=")


def test_ijepa_predicts_the_target_blocks_from_the_context_only():
  batch = toy_batches(1)[0]
  method = build("ijepa")
  value, out, _ = _loss(method, batch)
  assert np.isfinite(value)
  assert 2 < float(out.metrics["context_tokens"]) <= 9  # a 3×3 block at most
  assert 1 <= float(out.metrics["target_tokens"]) <= 4
  l2 = build("ijepa", distance="l2")
  value_l2, _, _ = _loss(l2, batch)
  # smooth L1 = x²/2 where |x| < 1, |x| − 1/2 beyond: at most x²/2.
  assert float(value) <= 0.5 * float(value_l2) + 1e-6


# ------------------------------------------------------ configs, errors ---


@pytest.mark.parametrize("name", NAMES)
def test_every_config_builds_for_every_preset(name):
  module = importlib.import_module(f"configs.{name}")
  assert module.get_config().dataset.name == "mnist5k"
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    assert config.method.backbone in models.VIT_SIZES
    assert config.optimizer.name == "adamw"
    method = methods.build(config)
    assert method.name == name


def test_config_schedules_and_optimizer_fields():
  ibot, ijepa, mae = (importlib.import_module(f"configs.{name}")
                      for name in ("ibot", "ijepa", "mae"))
  config = ijepa.get_config("imagenet2012")
  m = methods.schedule(config.method.momentum.to_dict())
  steps = config.total_steps
  np.testing.assert_allclose([m(0), m(steps // 2), m(steps)],
                             [0.996, 0.998, 1.0], rtol=1e-6)
  assert mae.get_config("imagenet2012").optimizer.b2 == 0.95
  ibot_config = ibot.get_config("imagenet2012")
  assert ibot_config.optimizer.clip_per_parameter
  assert ibot_config.optimizer.weight_decay_end == 0.4
  assert ibot_config.method.freeze_last_layer_steps == \
      ibot_config.dataset.train_size // ibot_config.batch_size


def test_registered_and_defaults_follow_the_papers():
  assert set(NAMES) <= set(methods.names())
  defaults = {name: {k: p.default for k, p in inspect.signature(
      getattr(methods, name)).parameters.items()} for name in NAMES}
  assert (defaults["mae"]["mask_ratio"], defaults["mae"]["decoder_dim"],
          defaults["mae"]["decoder_depth"]) == (0.75, 512, 8)
  assert (defaults["ibot"]["out_dim"], defaults["ibot"]["pred_ratio"],
          defaults["ibot"]["teacher_patch_temp"]) == (8192, (0.0, 0.3), 0.07)
  assert defaults["ibot"]["augment"]["num_local"] == 10
  assert (defaults["ijepa"]["num_targets"], defaults["ijepa"]["target_scale"],
          defaults["ijepa"]["distance"]) == (4, (0.15, 0.2), "smooth_l1")


def test_ibot_starts_as_the_official_head_and_patch_embedding():
  """bytedance/ibot `models/head.py`: the MLP's kernels N(0, 0.02²) and
  biases 0, the last layer's V PyTorch's default U(±1/√bottleneck) (built
  after `apply(_init_weights)`), g at 1 and, learnt (norm_last_layer=False,
  iBOT's default), shaped [K, 1] and so weight-decayed."""
  method = build("ibot", out_dim=512, hidden_dim=64, bottleneck_dim=64)
  images, _ = shape_images(np.arange(4) % 4, 16)
  params, _, method_state = method.init(jax.random.key(0),
                                        jnp.asarray(images))
  head = params["projector"]
  hidden = np.asarray(head["mlp"]["layers"]["linear1"]["kernel"])
  np.testing.assert_allclose(hidden.std(), 0.02, rtol=0.05)
  last = head[models.DINO_LAST_LAYER]
  bound = 1 / np.sqrt(64)
  assert np.abs(np.asarray(last["kernel"])).max() <= bound
  np.testing.assert_allclose(np.asarray(last["kernel"]).std(),
                             bound / np.sqrt(3), rtol=0.05)
  np.testing.assert_array_equal(last["scale"], 1.0)
  assert train.decay_mask(head)[models.DINO_LAST_LAYER]["scale"]
  # The patch embedding keeps PyTorch's Conv2d draw (`_init_weights` only
  # redraws Linear and LayerNorm): U(±1/√(p·p·C)), bias included.
  patch = params["backbone"]["patch_embed"]
  assert patch["kernel"].shape == (4, 4, 1, 192)  # gray toy images
  bound = 1 / np.sqrt(4 * 4 * 1)
  for leaf in (patch["kernel"], patch["bias"]):
    assert np.abs(np.asarray(leaf)).max() <= bound
  np.testing.assert_allclose(np.asarray(patch["kernel"]).std(),
                             bound / np.sqrt(3), rtol=0.1)
  jax.tree.map(np.testing.assert_array_equal, method_state.target.params,
               params)


@pytest.mark.parametrize("name, kwargs, match", [
    ("mae", dict(mask_ratio=1.0), "mask_ratio"),
    ("mae", dict(decoder_dim=30, decoder_heads=4), "decoder_dim"),
    ("mae", dict(backbone="resnet18"), "backbone"),
    ("mae", dict(eval_pool="max"), "eval_pool"),
    ("mae", dict(backbone_kwargs={"pool": "mean"}), "pool"),
    ("mae", dict(backbone_kwargs={"stem": "cifar"}), "backbone_kwargs"),
    ("ibot", dict(centering="sinkhorn"), "centering"),
    ("ibot", dict(teacher_patch_temp=0.0), "teacher_patch_temp"),
    ("ibot", dict(koleo_weight=-1.0), "koleo_weight"),
    ("ibot", dict(koleo_group_size=1), "koleo_group_size"),
    ("ibot", dict(pred_ratio=(0.3,), pred_ratio_var=(0.5,)), "ratio_var"),
    ("ibot", dict(backbone_kwargs={"drop_path_rate": 0.2}), "drop_path_rate"),
    ("ibot", dict(augment={"preset": "none"}), "augment"),
    ("ijepa", dict(distance="l1"), "distance"),
    ("ijepa", dict(predictor_dim=25), "predictor_dim"),
    ("ijepa", dict(target_scale=(0.3, 0.2)), "target_scale"),
    ("ijepa", dict(num_targets=0), "num_targets"),
])
def test_bad_hyper_parameters_raise_at_build_time(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(name, **kwargs)


def test_koleo_groups_follow_dinov2s_per_gpu_batches():
  x = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
  ibot_module = importlib.import_module("ssljax.methods.ibot")
  grouped = ibot_module._koleo(jnp.asarray(x), 4)
  np.testing.assert_allclose(
      grouped, (losses.koleo(x[:4]) + losses.koleo(x[4:])) / 2, rtol=1e-6)
  assert math.isclose(float(ibot_module._koleo(jnp.asarray(x), None)),
                      float(losses.koleo(x)), rel_tol=1e-6)
