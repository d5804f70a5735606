"""ssljax.methods pretext tasks: training on toy images, the inputs and
labels each method builds against independent references (numpy, written
from the papers' definitions), the decoder, and the configs.

Shapes are tiny (16×16 one-channel images, a CNN of 8 channels, heads of 16
units). The methods are built from their modules and are in the registry.
"""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import common
from ssljax import data, methods, pretext, train
from ssljax.methods import (_shared, colorization, context_encoder,
                            denoising_autoencoder, exemplar, jigsaw,
                            relative_patch, rotation)
from ssljax.models import decoder

from _crop_reference import np_standardize

MODULES = {"rotation": rotation, "jigsaw": jigsaw,
           "relative_patch": relative_patch,
           "denoising_autoencoder": denoising_autoencoder,
           "context_encoder": context_encoder, "exemplar": exemplar,
           "colorization": colorization}

BATCH = 16
SIZE = 16


def test_pretext_methods_are_registered():
  for name, module in MODULES.items():
    assert methods.get(name) is module.METHOD


def toy_images(n=2 * BATCH, size=SIZE, seed=0):
  """uint8 [n, size, size, 1]: asymmetric shapes (an L, a bar near the top,
  a corner blob) plus noise, so that rotations and positions are
  recognisable."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  shapes = [(xx < 4) | (yy > size - 5), yy < 4,
            (yy < size // 2) & (xx < size // 2)]
  images = [200 * shapes[i % 3] + rng.integers(0, 50, (size, size))
            for i in range(n)]
  return np.stack(images).astype(np.uint8)[..., None]


def tiny_config(module, **method_fields) -> ml_collections.ConfigDict:
  """A toy experiment config on one device, with Adam and no augmentation
  (the labels then depend only on the task's draws)."""
  config = ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, seed=0, mesh=dict(data=1),
      compute_dtype="float32", method=module.METHOD.default_config(),
      optimizer=dict(name="adamw", learning_rate=1e-2, weight_decay=0.0,
                     momentum=0.9, warmup_steps=0)))
  tiny = dict(backbone="tiny_cnn", head_hidden_dim=16, decoder_width=8,
              num_permutations=8, chromatic="none", overlap=1,
              num_exemplars=2 * BATCH)
  for key, value in tiny.items():
    if key in config.method:
      config.method[key] = value
  config.method.augment = ml_collections.ConfigDict(dict(preset="none"))
  config.method.update(method_fields)
  return config


def run_steps(module, config, n_steps, images):
  """Losses and metrics of `n_steps` jitted train steps over two batches."""
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config)
  state = train.create_train_state(config, module.METHOD, jax.random.key(0),
                                   images[:BATCH], tx)
  state = jax.device_put(state, train.replicated(mesh))
  step = train.make_train_step(config, module.METHOD, tx, mesh)
  metrics = []
  for t in range(n_steps):
    batch = {"image": images[t % 2 * BATCH:][:BATCH],
             "label": np.zeros(BATCH, np.int32)}
    state, m = step(state, jax.device_put(batch, train.data_sharded(mesh)))
    metrics.append(jax.device_get(m))
  return state, metrics


def normalised(images01):
  return (images01 - 0.1307) / 0.3081


# ----------------------------------------------------------- training runs ---


@pytest.mark.parametrize("name", list(MODULES))
def test_training_lowers_the_loss(name):
  module = MODULES[name]
  config = tiny_config(module)
  # Colourisation needs colour; the others train on one-channel shapes.
  images = (colour_images(n=2 * BATCH) if name == "colorization"
            else toy_images())
  state, metrics = run_steps(module, config, 12, images)
  losses = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-3:].mean() < losses[:3].mean(), losses
  features = module.METHOD.encode(config, state.params, state.model_state,
                                  jnp.asarray(images[:4]))
  assert features.shape == (4, 8) and np.all(np.isfinite(features))


# ------------------------------------------------------- tasks vs references ---


def test_rotation_task_feeds_all_four_rotations_with_their_labels():
  config = tiny_config(rotation)
  view = toy_images(n=3)[..., 0:1] / 255.0
  inputs, labels = rotation.task(config, jax.random.key(0),
                                 jnp.asarray(view, jnp.float32), None)
  assert inputs.shape == (12, 1, SIZE, SIZE, 1)
  want_labels = np.array([r for _ in range(3) for r in range(4)])
  np.testing.assert_array_equal(labels, want_labels)
  # Label r: the image turned r quarter-turns counter-clockwise, i.e. its
  # top row becomes the left column read bottom-up for r = 1.
  for b in range(3):
    image = view[b, ..., 0]
    quarter = np.array([[image[j, SIZE - 1 - i] for j in range(SIZE)]
                        for i in range(SIZE)])
    turns = [image, quarter, image[::-1, ::-1], quarter[::-1, ::-1]]
    for r in range(4):
      np.testing.assert_allclose(inputs[4 * b + r, 0, ..., 0],
                                 normalised(turns[r]), rtol=1e-5, atol=1e-5)
  # The library's label maker agrees.
  _, maker_labels = pretext.rotations(jnp.asarray(view, jnp.float32))
  np.testing.assert_array_equal(labels, maker_labels)


def test_rotation_loss_is_the_cross_entropy_of_the_logits():
  config = tiny_config(rotation)
  images = jnp.asarray(toy_images(n=4))
  params, model_state, method_state = rotation.METHOD.init(
      config, jax.random.key(0), images)
  loss, out = rotation.METHOD.loss(config, params, model_state, method_state,
                                   {"image": images}, jax.random.key(1), 0)
  inputs, labels = rotation.task(config, None,
                                 jnp.asarray(images, jnp.float32) / 255.0,
                                 None)
  net = rotation._pretext.classifier_network(config, 4)
  logits = np.asarray(net.apply(params, model_state, inputs, train=True)[0]
                      ["logits"], np.float64)
  want = np.mean([np.log(np.sum(np.exp(row))) - row[label]
                  for row, label in zip(logits, np.asarray(labels))])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  accuracy = np.mean(np.argmax(logits, axis=1) == np.asarray(labels))
  np.testing.assert_allclose(out.metrics["pretext_accuracy"], accuracy)
  # Embeddings: the unrotated images' features.
  features = rotation.METHOD.encode(
      config, params, out.model_state, images)
  assert out.embeddings.shape == features.shape == (4, 8)


def test_jigsaw_keeps_a_far_apart_permutation_set_and_uses_it():
  config = tiny_config(jigsaw, num_permutations=12, permutation_seed=3)
  images = jnp.asarray(toy_images(n=4))
  _, _, state = jigsaw.METHOD.init(config, jax.random.key(0), images)
  perms = np.asarray(state.permutations)
  assert perms.shape == (12, 9)
  for i in range(12):
    assert sorted(perms[i]) == list(range(9))
    for j in range(i):
      assert np.sum(perms[i] != perms[j]) >= 3, (i, j)
  np.testing.assert_array_equal(perms, pretext.permutation_set(12, seed=3))
  # The tiles and labels are the label maker's, with the state's set.
  view = jnp.asarray(toy_images(n=4), jnp.float32) / 255.0
  tiles, labels = jigsaw.task(config, jax.random.key(5), view, state)
  want_tiles, want_labels = pretext.jigsaw_tiles(jax.random.key(5), view,
                                                 perms)
  np.testing.assert_array_equal(labels, want_labels)
  np.testing.assert_array_equal(tiles, want_tiles)
  assert tiles.shape == (4, 9, 4, 4, 1) and np.all(labels < 12)
  # post_update leaves the set alone.
  assert jigsaw.METHOD.post_update(config, None, state, {}, 3) is state


def test_relative_patch_pairs_the_centre_with_the_labelled_neighbour():
  config = tiny_config(relative_patch)
  # 18-pixel images: 6-pixel cells, patches of 4 centred in them, no jitter.
  view = np.random.default_rng(1).uniform(size=(5, 18, 18, 1))
  x = jnp.asarray(view, jnp.float32)
  inputs, labels = relative_patch.task(config, jax.random.key(2), x, None)
  _, _, want_labels = pretext.relative_patches(jax.random.key(2), x)
  np.testing.assert_array_equal(labels, want_labels)
  assert inputs.shape == (5, 2, 4, 4, 1)
  offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0),
             (1, 1)]  # the paper's 8 positions, row-major around the centre
  for b, label in enumerate(np.asarray(labels)):
    row, col = 1 + offsets[label][0], 1 + offsets[label][1]
    want = view[b, 6 * row + 1:6 * row + 5, 6 * col + 1:6 * col + 5]
    # Each patch standardised on its own, not with the dataset's statistics.
    centre = view[b, 7:11, 7:11]
    for got, crop in [(inputs[b, 1], want), (inputs[b, 0], centre)]:
      np.testing.assert_allclose(
          got, np_standardize(crop, joint_channels=True), rtol=1e-4, atol=1e-4)


def test_denoising_autoencoder_reconstructs_the_clean_image():
  config = tiny_config(denoising_autoencoder, corruption="masking",
                       corruption_level=0.5)
  images = jnp.asarray(toy_images(n=4))
  view = jnp.asarray(images, jnp.float32) / 255.0
  inputs, targets, mask = denoising_autoencoder.task(
      config, jax.random.key(3), view)
  noisy = np.asarray(pretext.corrupt(jax.random.key(3), view, kind="masking",
                                     level=0.5))
  # Half of each image's components are zeroed, the targets are clean.
  assert np.all(np.sum(noisy == 0, axis=(1, 2, 3)) >= SIZE * SIZE // 2)
  np.testing.assert_allclose(inputs, normalised(noisy), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(targets, normalised(np.asarray(view)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mask, 1.0)
  params, model_state, state = denoising_autoencoder.METHOD.init(
      config, jax.random.key(0), images)
  net = denoising_autoencoder._pretext.autoencoder_network(
      config, (SIZE, SIZE, 1))
  out, _ = net.apply(params, model_state, inputs, train=True)
  value = denoising_autoencoder.objective(config, out["reconstruction"],
                                          targets, mask)
  want = np.mean((np.asarray(out["reconstruction"], np.float64)
                  - np.asarray(targets, np.float64)) ** 2)
  np.testing.assert_allclose(value, want, rtol=1e-5)


def test_context_encoder_removes_the_centre_and_weights_its_border():
  config = tiny_config(context_encoder, overlap=1, overlap_weight=10.0)
  view = np.random.default_rng(4).uniform(size=(2, SIZE, SIZE, 1))
  inputs, targets, mask = context_encoder.task(
      config, jax.random.key(0), jnp.asarray(view, jnp.float32))
  hole = np.zeros((SIZE, SIZE), bool)
  hole[4:12, 4:12] = True  # the central quarter: half the side
  np.testing.assert_array_equal(mask[..., 0], np.broadcast_to(hole, (2,) +
                                                              hole.shape))
  np.testing.assert_allclose(targets, normalised(view), rtol=1e-5, atol=1e-5)
  # The hole holds the mean pixel (0 once normalised), the rest the image.
  want = np.where(hole[None, :, :, None], 0.0, normalised(view))
  np.testing.assert_allclose(inputs, want, rtol=1e-5, atol=1e-5)
  # Weights: 1 in the hole, 10 on the ring of 1 pixel around it.
  pred = np.random.default_rng(5).normal(size=view.shape)
  weight = np.zeros((SIZE, SIZE))
  for i in range(SIZE):
    for j in range(SIZE):
      if hole[i, j]:
        weight[i, j] = 1.0
      elif hole[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any():
        weight[i, j] = 10.0
  error = (pred - np.asarray(targets, np.float64)) ** 2
  want_loss = np.sum(weight[None, :, :, None] * error) / (2 * weight.sum())
  value = context_encoder.objective(config, jnp.asarray(pred, jnp.float32),
                                    targets, mask)
  np.testing.assert_allclose(value, want_loss, rtol=1e-5)


def test_context_encoder_random_blocks_and_bad_mask_names():
  config = tiny_config(context_encoder, mask="random_block", num_blocks=2)
  mask = context_encoder.region(config, jax.random.key(0), (3, SIZE, SIZE, 1))
  # 2 blocks of side round(16·√(1/8)) = 6: 36 to 72 pixels.
  covered = np.asarray(mask).sum(axis=(1, 2, 3))
  assert np.all((covered >= 36) & (covered <= 72)), covered
  config.method.mask = "ring"
  with pytest.raises(ValueError, match="mask"):
    context_encoder.region(config, jax.random.key(0), (3, SIZE, SIZE, 1))


def colour_images(n=3, seed=6):
  """uint8 RGB images of coloured blocks (a toy image is gray)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 2, 2, 3)).repeat(SIZE // 2, 1).repeat(
      SIZE // 2, 2).astype(np.uint8)


def numpy_lightness(rgb):
  """(L* − 50) / 50 from the sRGB formulas: Y of the linear values, D65."""
  linear = np.where(rgb <= 0.04045, rgb / 12.92,
                    ((rgb + 0.055) / 1.055) ** 2.4)
  y = linear @ np.array([0.2126729, 0.7151522, 0.0721750])
  f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
  return (116 * f - 16 - 50) / 50


def test_colorization_inputs_targets_and_loss():
  config = tiny_config(colorization)
  view = colour_images() / 255.0
  inputs, targets, _ = colorization.task(
      config, None, jnp.asarray(view, jnp.float32))
  np.testing.assert_allclose(inputs[..., 0], numpy_lightness(view), rtol=1e-4,
                             atol=1e-4)
  lab = pretext.rgb_to_lab(jnp.asarray(view, jnp.float32))
  np.testing.assert_allclose(
      targets, pretext.encode_ab(lab[..., 1:], pretext.ab_bins()), atol=1e-6)
  assert targets.shape == (3, SIZE, SIZE, 261)
  logits = np.random.default_rng(7).normal(size=targets.shape)
  z = np.asarray(targets, np.float64)
  log_p = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  want = -np.sum(z * log_p) / (3 * SIZE * SIZE)
  value = colorization.objective(config, jnp.asarray(logits, jnp.float32),
                                 targets, None)
  np.testing.assert_allclose(value, want, rtol=1e-5)


def test_colorization_rejects_grayscale_data_and_encodes_lightness():
  config = tiny_config(colorization)
  with pytest.raises(ValueError, match="colorization.*grayscale"):
    colorization.METHOD.init(config, jax.random.key(0),
                             jnp.asarray(toy_images(n=4)))
  images = jnp.asarray(colour_images(n=4))
  params, model_state, _ = colorization.METHOD.init(config, jax.random.key(0),
                                                    images)
  features = colorization.METHOD.encode(config, params, model_state, images)
  # Normalised float images give the same features as the raw ones.
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  again = colorization.METHOD.encode(
      config, params, model_state,
      jnp.asarray((np.asarray(images) / 255.0 - mean) / std, jnp.float32))
  assert features.shape == (4, 8)
  np.testing.assert_allclose(features, again, rtol=1e-4, atol=1e-5)


def test_exemplar_set_fills_in_order_then_stays_fixed():
  config = tiny_config(exemplar, num_exemplars=6)
  images = toy_images(n=12)
  params, model_state, state = exemplar.METHOD.init(
      config, jax.random.key(0), jnp.zeros((4, SIZE, SIZE, 1), jnp.uint8))
  assert state.exemplars.shape == (6, SIZE, SIZE, 1) and int(state.count) == 0
  for t, (lo, count) in enumerate([(0, 4), (4, 6), (8, 6)]):
    batch = {"image": jnp.asarray(images[lo:lo + 4])}
    _, out = exemplar.METHOD.loss(config, params, model_state, state, batch,
                                  jax.random.key(t), t)
    state = exemplar.METHOD.post_update(config, params, state, out.update, t)
    assert int(state.count) == count == out.metrics["exemplars"]
  # Slots 0-3 from the first batch, 4-5 from the second; the third is unused.
  np.testing.assert_array_equal(state.exemplars,
                                np.concatenate([images[:4], images[4:6]]))


def test_exemplar_views_are_of_the_drawn_exemplars():
  config = tiny_config(exemplar, num_exemplars=8)
  images = toy_images(n=8, seed=3)
  state = exemplar.ExemplarState(jnp.asarray(images), jnp.asarray(5))
  inputs, labels = exemplar.surrogate_task(config, jax.random.key(1), state,
                                           32)
  labels = np.asarray(labels)
  assert inputs.shape == (32, 1, SIZE, SIZE, 1)
  assert labels.min() >= 0 and labels.max() < 5  # only the filled ones
  for b, label in enumerate(labels):
    # No augmentation in the toy config: the view is the exemplar itself.
    np.testing.assert_allclose(inputs[b, 0], normalised(images[label] / 255.0),
                               rtol=1e-5, atol=1e-5)


# ----------------------------------- precision, sharding, the train loop ---


def _loss_fn(module, config, images):
  params, model_state, state = module.METHOD.init(config, jax.random.key(0),
                                                  images)
  return jax.jit(lambda batch: module.METHOD.loss(
      config, params, model_state, state, batch, jax.random.key(1), 0)[0])


@pytest.mark.parametrize("name", ["rotation", "context_encoder"])
def test_bfloat16_compute_gives_a_close_float32_loss(name):
  images = jnp.asarray(toy_images(n=BATCH))
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(MODULES[name])
    config.compute_dtype = dtype
    value = _loss_fn(MODULES[name], config, images)({"image": images})
    assert value.dtype == jnp.float32 and np.isfinite(value)
    losses[dtype] = float(value)
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=5e-2)


@pytest.mark.parametrize("name", ["jigsaw", "denoising_autoencoder",
                                  "exemplar"])
def test_loss_on_a_batch_sharded_over_8_devices_is_the_global_loss(name):
  """Global view: the label makers draw per example and BatchNorm is over
  the global batch, so sharding the batch changes nothing."""
  config = tiny_config(MODULES[name])
  images = jnp.asarray(toy_images(n=BATCH))
  loss = _loss_fn(MODULES[name], config, images)
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(loss({"image": sharded}),
                             loss({"image": images}), rtol=1e-5)


def test_train_loop_checkpoints_and_restores_the_method_state(tmp_path):
  """exemplar through `train.train` on all devices: its NamedTuple state
  is saved and restored with the run."""
  config = tiny_config(exemplar, num_exemplars=12)
  config.update(dict(dataset=dict(name="synthetic"), batch_size=8,
                     total_steps=2, mesh=dict(data=-1), checkpoint_every=2,
                     log_every=1))
  images = toy_images(n=16)
  records = [{"image": image, "label": 0} for image in images]
  metrics = train.train(config, str(tmp_path), method=exemplar.METHOD,
                        data=data.pipeline(records, batch_size=8))
  assert metrics["step"] == 2 and np.isfinite(metrics["loss"])
  state = train.restore_state(config, str(tmp_path),
                              image_shape=(SIZE, SIZE, 1),
                              method=exemplar.METHOD)
  assert isinstance(state.method_state, exemplar.ExemplarState)
  assert int(state.method_state.count) == 12
  assert np.asarray(state.method_state.exemplars).max() > 0


@pytest.mark.parametrize("name, field, value, match", [
    ("relative_patch", "chromatic", "projection", "chromatic"),
    ("jigsaw", "num_permutations", 400_000, "num_permutations"),
    ("denoising_autoencoder", "corruption", "blur", "kind"),
    ("context_encoder", "mask_fraction", 1.5, "fraction"),
])
def test_bad_hyper_parameters_raise_at_init(name, field, value, match):
  config = tiny_config(MODULES[name], **{field: value})
  with pytest.raises(ValueError, match=match):
    MODULES[name].METHOD.init(config, jax.random.key(0),
                              jnp.asarray(toy_images(n=4)))


# ---------------------------------------------------------------- decoder ---


@pytest.mark.parametrize("shape", [(28, 28, 1), (20, 12, 3)])
def test_decoder_produces_the_image_shape(shape):
  net = decoder.conv_decoder(shape, width=4)
  params, state = net.init(jax.random.key(0), jnp.ones((2, 5)))
  out, _ = net.apply(params, state, jnp.ones((2, 5)), train=True)
  assert out.shape == (2,) + shape
  with pytest.raises(ValueError, match="out_shape"):
    decoder.conv_decoder((28, 28))


# ---------------------------------------------------------------- configs ---


@pytest.mark.parametrize("name", list(MODULES))
def test_every_config_builds_for_every_preset(name):
  module = importlib.import_module(f"configs.{name}")
  default = "cifar10" if name == "colorization" else "mnist5k"
  assert module.get_config().dataset.name == default
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    assert 0 <= config.optimizer.warmup_steps < config.total_steps


@pytest.mark.parametrize("name", ["jigsaw", "relative_patch"])
def test_mnist5k_patch_backbone_keeps_a_map_on_the_crops(name):
  # configs/common.py, MNIST5K_PATCH_BACKBONE: on the task's own crops the
  # last map is 2×2 (1×1 with the other recipes' strides), and whole digits
  # give the 7×7 map the kNN and linear probe read.
  config = importlib.import_module(f"configs.{name}").get_config()
  module = MODULES[name]
  state = module.init_state(config) if name == "jigsaw" else None
  view = jnp.asarray(toy_images(2, size=28), jnp.float32) / 255.0
  crops, _ = module.task(config, jax.random.key(0), view, state)
  backbone = _shared.backbone(config)
  params, model_state = backbone.init(jax.random.key(1), view)
  width = config.method.backbone_kwargs.widths[-1]
  for images, side in [(crops.reshape(-1, *crops.shape[2:]), 2), (view, 7)]:
    features, _ = backbone.apply(params, model_state, images, train=False)
    assert features.shape == (images.shape[0], side * side * width)
