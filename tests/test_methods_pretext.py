"""ssljax.methods pretext tasks: training on toy images, the inputs and
labels each method builds against independent references (numpy, written
from the papers' definitions and the official code), the decoder, the
siamese towers of `models.compose`, and the configs.

Shapes are tiny (16×16 one-channel images, a CNN of 8 channels, heads of 16
units). The methods are built by their factories, without a config; a
hand-made config serves the optimizer only.
"""

import functools
import importlib
import inspect

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import common
from ssljax import data, methods, models, pretext, train
from ssljax.methods import _pretext, _shared
from ssljax.models import decoder

from _crop_reference import np_standardize

NAMES = ("rotation", "jigsaw", "relative_patch", "denoising_autoencoder",
         "context_encoder", "exemplar", "colorization")
# The modules (`ssljax.methods.rotation` is the factory, the package
# attribute being replaced by it).
MODULES = {name: importlib.import_module(f"ssljax.methods.{name}")
           for name in NAMES}

BATCH = 16
SIZE = 16
# No augmentation: the labels then depend only on the task's draws.
NONE = {"preset": "none"}
# Tiny sizes of each factory.
TINY = {"rotation": dict(head_hidden_dim=16),
        "jigsaw": dict(head_hidden_dim=16, num_permutations=8),
        "relative_patch": dict(head_hidden_dim=16, chromatic="none"),
        "context_encoder": dict(decoder_width=8, overlap=1),
        "colorization": dict(decoder_width=8),
        "denoising_autoencoder": dict(decoder_width=8),
        "exemplar": dict(head_hidden_dim=16, num_exemplars=2 * BATCH)}
SETUP = _shared.setup("tiny_cnn", None, NONE, "float32")


def build(name, **kwargs):
  """The method `name` with a tiny CNN, tiny heads and no augmentation."""
  return methods.get(name)(**{"backbone": "tiny_cnn", "augment": NONE,
                              **TINY[name], **kwargs})


def test_pretext_methods_are_registered():
  for name, module in MODULES.items():
    factory = methods.get(name)
    assert factory is getattr(methods, name) is getattr(module, name)
    assert factory(backbone="tiny_cnn").name == name


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


def colour_images(n=3, seed=6):
  """uint8 RGB images of coloured blocks (a toy image is gray)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 2, 2, 3)).repeat(SIZE // 2, 1).repeat(
      SIZE // 2, 2).astype(np.uint8)


def optimizer_config(total_steps=40, mesh_data=1):
  """The fields `train` reads for the optimizer and the mesh: Adam."""
  return ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=total_steps, mesh=dict(data=mesh_data),
      optimizer=dict(name="adamw", learning_rate=1e-2, weight_decay=0.0,
                     momentum=0.9, warmup_steps=0)))


def run_steps(method, n_steps, images):
  """Losses and metrics of `n_steps` jitted train steps over two batches."""
  config = optimizer_config()
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, frozen=method.frozen)
  state = train.create_train_state(method, jax.random.key(0),
                                   images[:BATCH], tx)
  state = jax.device_put(state, train.replicated(mesh))
  step = train.make_train_step(config, method, tx, mesh)
  metrics = []
  for t in range(n_steps):
    batch = {"image": images[t % 2 * BATCH:][:BATCH],
             "label": np.zeros(BATCH, np.int32)}
    state, m = step(state, jax.device_put(batch, train.data_sharded(mesh)))
    metrics.append(jax.device_get(m))
  return state, metrics


def normalised(images01):
  return (images01 - 0.1307) / 0.3081


def np_cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64).reshape(-1, logits.shape[-1])
  labels = np.asarray(labels).ravel()
  return np.mean([np.log(np.sum(np.exp(row))) - row[label]
                  for row, label in zip(logits, labels)])


def train_apply(model):
  """`model.apply` in train mode, jitted (op by op is slow on the CPU)."""
  return jax.jit(functools.partial(model.apply, train=True))


def task_rng(rng):
  """The key the tasks draw with (`_pretext.on_view`: view, then task)."""
  return jax.random.split(rng)[1]


# ----------------------------------------------------------- training runs ---


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss(name):
  method = build(name)
  # Colourisation needs colour; the others train on one-channel shapes.
  images = (colour_images(n=2 * BATCH) if name == "colorization"
            else toy_images())
  state, metrics = run_steps(method, 12, images)
  losses = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-3:].mean() < losses[:3].mean(), losses
  features = method.encode(state.params, state.model_state,
                           state.method_state, jnp.asarray(images[:4]))
  assert features.shape == (4, 8) and np.all(np.isfinite(features))


# ---------------------------------------------------- tasks vs references ---


def test_rotation_task_feeds_all_four_rotations_with_their_labels():
  view = toy_images(n=3)[..., 0:1] / 255.0
  inputs, labels = MODULES["rotation"].task(jnp.asarray(view, jnp.float32))[:2]
  assert inputs.shape == (3, 4, SIZE, SIZE, 1)
  np.testing.assert_array_equal(labels, np.tile(np.arange(4), (3, 1)))
  # Label r: the image turned r quarter-turns counter-clockwise, i.e. its
  # top row becomes the left column read bottom-up for r = 1 (the official
  # rotate_img(img, 90) = flipud(transpose(img))).
  for b in range(3):
    image = view[b, ..., 0]
    quarter = np.array([[image[j, SIZE - 1 - i] for j in range(SIZE)]
                        for i in range(SIZE)])
    np.testing.assert_array_equal(quarter, np.flipud(image.T))
    turns = [image, quarter, image[::-1, ::-1], quarter[::-1, ::-1]]
    for r in range(4):
      np.testing.assert_allclose(inputs[b, r, ..., 0], turns[r], rtol=1e-6)
  # The library's label maker agrees.
  _, maker_labels = pretext.rotations(jnp.asarray(view, jnp.float32))
  np.testing.assert_array_equal(labels.ravel(), maker_labels)


def test_rotation_loss_is_the_cross_entropy_of_the_four_rotations():
  method = build("rotation")
  images = jnp.asarray(toy_images(n=4))
  params, model_state, method_state = method.init(jax.random.key(0), images)
  loss, out = jax.jit(method.loss)(params, model_state, method_state,
                                   {"image": images}, jax.random.key(1), 0)
  # The official batch: all 4B copies, normalised, through one call.
  inputs = MODULES["rotation"].task(normalised(images / 255.0)).inputs
  net = _pretext.classifier("test", SETUP, 4, 16, 1)
  outputs, _ = train_apply(net)(params, model_state,
                                inputs.reshape(-1, SIZE, SIZE, 1))
  labels = np.tile(np.arange(4), 4)
  np.testing.assert_allclose(loss, np_cross_entropy(outputs["logits"],
                                                    labels), rtol=1e-5)
  accuracy = np.mean(np.argmax(outputs["logits"], axis=1) == labels)
  np.testing.assert_allclose(out.metrics["pretext_accuracy"], accuracy)
  # Embeddings: the unrotated images' features; the head is linear, as the
  # official Network-in-Network RotNet's classifier.
  np.testing.assert_allclose(out.embeddings, outputs["features"][::4],
                             rtol=1e-5)
  assert sorted(params["classifier"]["layers"]) == ["linear0"]


def test_jigsaw_keeps_a_far_apart_permutation_set_and_uses_it():
  method = build("jigsaw", num_permutations=12, permutation_seed=3)
  images = jnp.asarray(toy_images(n=4))
  params, model_state, state = method.init(jax.random.key(0), images)
  perms = np.asarray(state.permutations)
  assert perms.shape == (12, 9)
  for i in range(12):
    assert sorted(perms[i]) == list(range(9))
    for j in range(i):
      assert np.sum(perms[i] != perms[j]) >= 3, (i, j)
  np.testing.assert_array_equal(perms, pretext.permutation_set(12, seed=3))
  # The loss classifies the label maker's tiles, shuffled by the set held in
  # the state (another set in the state: other tiles), each tile position
  # through the backbone in its own call (the official separate towers).
  view = jnp.asarray(images, jnp.float32) / 255.0
  net = _pretext.classifier("test", SETUP, 12, 16, 2, towers="per_view")
  rng = jax.random.key(5)
  for permutations in (perms, perms[::-1]):
    state = state._replace(permutations=jnp.asarray(permutations))
    loss, out = jax.jit(method.loss)(params, model_state, state,
                                     {"image": images}, rng, 0)
    tiles, labels = pretext.jigsaw_tiles(task_rng(rng), view, permutations)
    assert tiles.shape == (4, 9, 4, 4, 1) and np.all(labels < 12)
    outputs, want_state = train_apply(net)(params, model_state, tiles)
    np.testing.assert_allclose(loss, np_cross_entropy(outputs["logits"],
                                                      labels), rtol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5),
                 out.model_state, want_state)
  # post_update leaves the set alone.
  assert method.post_update(params, state, out.update, 3)[1] is state


def test_relative_patch_pairs_the_centre_with_the_labelled_neighbour():
  # 18-pixel images: 6-pixel cells, patches of 4 centred in them, no jitter.
  view = np.random.default_rng(1).uniform(size=(5, 18, 18, 1))
  x = jnp.asarray(view, jnp.float32)
  inputs, labels = MODULES["relative_patch"].task(jax.random.key(2), x,
                                                  "none")[:2]
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


def test_relative_patch_defaults_are_the_official_code():
  # deepcontext's train.py: colour dropping on every patch, and fc7, fc8
  # (4096 each) and fc9 after the pair's concatenation.
  method = methods.relative_patch(backbone="tiny_cnn")
  gray = jnp.zeros((2, 24, 24, 1), jnp.uint8)
  with pytest.raises(ValueError, match="'drop' needs RGB"):
    method.init(jax.random.key(0), gray)
  params, _, _ = jax.eval_shape(method.init, jax.random.key(0),
                                jnp.zeros((2, 24, 24, 3), jnp.uint8))
  layers = params["classifier"]["layers"]
  assert [layers[f"linear{i}"]["kernel"].shape for i in range(3)] == [
      (16, 4096), (4096, 4096), (4096, 8)]
  # A third of the patches blurred (prep_image); views of a third to all of
  # the image (150k-450k pixels, of which the 3 × 3 layout covers 147k),
  # unflipped.
  defaults = inspect.signature(methods.relative_patch).parameters
  assert defaults["blur_prob"].default == 0.33
  augment = defaults["augment"].default
  assert augment["scale"] == (1 / 3, 1.0) and augment["flip_prob"] == 0.0


def test_denoising_autoencoder_reconstructs_the_clean_image():
  images = jnp.asarray(toy_images(n=4))
  view = jnp.asarray(images, jnp.float32) / 255.0
  module = MODULES["denoising_autoencoder"]
  inputs, targets = module.task(jax.random.key(3), view, NONE,
                                corruption="masking", level=0.5)[:2]
  noisy = np.asarray(pretext.corrupt(jax.random.key(3), view, kind="masking",
                                     level=0.5))
  # Half of each image's components are zeroed, the targets are clean.
  assert np.all(np.sum(noisy == 0, axis=(1, 2, 3)) >= SIZE * SIZE // 2)
  np.testing.assert_allclose(inputs, normalised(noisy), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(targets, normalised(np.asarray(view)),
                             rtol=1e-5, atol=1e-5)
  method = build("denoising_autoencoder", corruption_level=0.5)
  params, model_state, state = method.init(jax.random.key(0), images)
  loss, _ = jax.jit(method.loss)(params, model_state, state,
                                 {"image": images}, jax.random.key(4), 0)
  again = module.task(task_rng(jax.random.key(4)), view, NONE,
                      corruption="masking", level=0.5)
  out, _ = train_apply(_pretext.autoencoder(SETUP, 8))(
      params, model_state, again.inputs)
  want = np.mean((np.asarray(out["reconstruction"], np.float64)
                  - np.asarray(again.targets, np.float64)) ** 2)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def np_context_weights(region, overlap, weight):
  """Per-pixel loss weights of the official train.lua: 1 in the filled
  hole (the region shrunk by `overlap`), `weight` on the region's visible
  border, 0 outside the region; and the hole."""
  hole = np.zeros_like(region)
  for i in range(region.shape[0]):
    for j in range(region.shape[1]):
      window = region[max(i - overlap, 0):i + overlap + 1,
                      max(j - overlap, 0):j + overlap + 1]
      hole[i, j] = window.all()
  return np.where(hole, 1.0, np.where(region, weight, 0.0)), hole


def test_context_encoder_fills_the_centre_and_weights_its_visible_border():
  module = MODULES["context_encoder"]
  view = np.random.default_rng(4).uniform(size=(2, SIZE, SIZE, 1))
  images = normalised(view)
  inputs, (targets, removed) = module.task(
      jax.random.key(0), jnp.asarray(images, jnp.float32), mask="center",
      fraction=0.25, num_blocks=4, overlap=1)[:2]
  region = np.zeros((SIZE, SIZE), bool)
  region[4:12, 4:12] = True  # the central quarter: half the side
  weight, hole = np_context_weights(region, 1, 10.0)
  # As overlapPred: the hole is the region without its 1-pixel border.
  np.testing.assert_array_equal(hole[5:11, 5:11], True)
  assert hole.sum() == 36
  np.testing.assert_array_equal(removed[..., 0],
                                np.broadcast_to(hole, (2,) + hole.shape))
  np.testing.assert_allclose(targets, images, rtol=1e-5, atol=1e-5)
  # The hole holds the mean pixel (0 once normalised), the rest the image.
  want = np.where(hole[None, :, :, None], 0.0, images)
  np.testing.assert_allclose(inputs, want, rtol=1e-5, atol=1e-5)
  # The method's loss: weight 1 in the hole, 10 on the visible border.
  method = build("context_encoder", overlap=1, overlap_weight=10.0)
  batch = {"image": jnp.asarray(np.round(view * 255), jnp.uint8)}
  params, model_state, state = method.init(jax.random.key(0), batch)
  loss, _ = jax.jit(method.loss)(params, model_state, state, batch,
                                 jax.random.key(1), 0)
  clean = normalised(np.asarray(batch["image"]) / 255.0)
  masked = np.where(hole[None, :, :, None], 0.0, clean)
  out, _ = train_apply(_pretext.autoencoder(SETUP, 8))(
      params, model_state, jnp.asarray(masked, jnp.float32))
  error = (np.asarray(out["reconstruction"], np.float64) - clean) ** 2
  want_loss = np.sum(weight[None, :, :, None] * error) / (2 * weight.sum())
  np.testing.assert_allclose(loss, want_loss, rtol=1e-4)


def test_context_encoder_random_blocks():
  module = MODULES["context_encoder"]
  mask = module.region(jax.random.key(0), (3, SIZE, SIZE, 1),
                       mask="random_block", fraction=0.25, num_blocks=2)
  # 2 blocks of side round(16·√(1/8)) = 6: 36 to 72 pixels.
  covered = np.asarray(mask).sum(axis=(1, 2, 3))
  assert np.all((covered >= 36) & (covered <= 72)), covered
  # Each block's hole keeps its border visible; at the image's edge too.
  for b in range(3):
    _, hole = np_context_weights(np.asarray(mask[b, ..., 0], bool), 1, 10.0)
    inner = module.hole(mask[b:b + 1], 1)[0, ..., 0]
    edge = np.pad(np.asarray(mask[b, ..., 0], bool), 1, constant_values=True)
    _, padded_hole = np_context_weights(edge, 1, 10.0)
    np.testing.assert_array_equal(inner, padded_hole[1:-1, 1:-1])
    assert hole.sum() <= np.asarray(inner).sum()


def numpy_lightness(rgb):
  """L* − 50 from the sRGB formulas: Y of the linear values, D65."""
  linear = np.where(rgb <= 0.04045, rgb / 12.92,
                    ((rgb + 0.055) / 1.055) ** 2.4)
  y = linear @ np.array([0.2126729, 0.7151522, 0.0721750])
  f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
  return 116 * f - 16 - 50


def test_colorization_inputs_targets_and_loss():
  module = MODULES["colorization"]
  view = colour_images() / 255.0
  # The third image gray: the official NonGrayMaskLayer gives it no loss.
  view[2] = view[2].mean(axis=-1, keepdims=True)
  kwargs = dict(bin_grid=10, sigma=5.0, neighbours=5)
  inputs, (targets, weights) = module.task(
      jnp.asarray(view, jnp.float32), skip_gray=True, **kwargs)[:2]
  # The official data_l: L* − 50, not rescaled.
  np.testing.assert_allclose(inputs[..., 0], numpy_lightness(view),
                             rtol=1e-4, atol=1e-3)
  lab = pretext.rgb_to_lab(jnp.asarray(view, jnp.float32))
  np.testing.assert_allclose(
      targets, pretext.encode_ab(lab[..., 1:], pretext.ab_bins()), atol=1e-6)
  assert targets.shape == (3, SIZE, SIZE, 261)
  np.testing.assert_array_equal(weights, [1.0, 1.0, 0.0])
  logits = np.random.default_rng(7).normal(size=targets.shape)
  z = np.asarray(targets, np.float64)
  log_p = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  per_image = -np.sum(z * log_p, axis=(1, 2, 3)) / (SIZE * SIZE)
  value, metrics = module.objective(
      {"reconstruction": jnp.asarray(logits, jnp.float32)},
      (targets, weights))
  np.testing.assert_allclose(value, (per_image[0] + per_image[1]) / 3,
                             rtol=1e-5)
  np.testing.assert_allclose(metrics["coloured_images"], 2 / 3)
  _, (_, every) = module.task(jnp.asarray(view, jnp.float32),
                              skip_gray=False, **kwargs)[:2]
  np.testing.assert_array_equal(every, 1.0)


def test_colorization_defaults_are_the_official_code():
  # 176-pixel crops of 256-pixel images, flipped half the time; NNEncLayer's
  # 10 neighbours with σ = 5; NonGrayMaskLayer.
  defaults = inspect.signature(methods.colorization).parameters
  augment = defaults["augment"].default
  assert augment["scale"] == ((176 / 256) ** 2,) * 2
  assert augment["ratio"] == (1.0, 1.0) and augment["flip_prob"] is None
  assert (defaults["neighbours"].default, defaults["sigma"].default,
          defaults["skip_gray"].default) == (10, 5.0, True)


def test_colorization_rejects_grayscale_data_and_encodes_lightness():
  method = build("colorization")
  with pytest.raises(ValueError, match="colorization.*grayscale"):
    method.init(jax.random.key(0), jnp.asarray(toy_images(n=4)))
  images = jnp.asarray(colour_images(n=4))
  params, model_state, state = method.init(jax.random.key(0), images)
  features = method.encode(params, model_state, state, images)
  # Normalised float images give the same features as the raw ones.
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  again = method.encode(
      params, model_state, state,
      jnp.asarray((np.asarray(images) / 255.0 - mean) / std, jnp.float32))
  assert features.shape == (4, 8)
  np.testing.assert_allclose(features, again, rtol=1e-4, atol=1e-4)


def test_exemplar_set_fills_in_order_then_stays_fixed():
  method = build("exemplar", num_exemplars=6)
  images = toy_images(n=12)
  params, model_state, state = method.init(
      jax.random.key(0), jnp.zeros((4, SIZE, SIZE, 1), jnp.uint8))
  assert state.exemplars.shape == (6, SIZE, SIZE, 1) and int(state.count) == 0
  for t, (lo, count) in enumerate([(0, 4), (4, 6), (8, 6)]):
    batch = {"image": jnp.asarray(images[lo:lo + 4])}
    _, out = jax.jit(method.loss)(params, model_state, state, batch,
                                  jax.random.key(t), t)
    _, state = method.post_update(params, state, out.update, t)
    assert int(state.count) == count == out.metrics["exemplars"]
  # Slots 0-3 from the first batch, 4-5 from the second; the third is unused.
  np.testing.assert_array_equal(state.exemplars,
                                np.concatenate([images[:4], images[4:6]]))


def test_exemplar_views_are_of_the_drawn_exemplars():
  images = toy_images(n=8, seed=3)
  state = MODULES["exemplar"].ExemplarState(jnp.asarray(images),
                                            jnp.asarray(5))
  inputs, labels = MODULES["exemplar"].surrogate_task(
      SETUP, jax.random.key(1), state, 32)[:2]
  labels = np.asarray(labels)
  assert inputs.shape == (32, SIZE, SIZE, 1)
  assert labels.min() >= 0 and labels.max() < 5  # only the filled ones
  for b, label in enumerate(labels):
    # No augmentation here: the view is the exemplar itself.
    np.testing.assert_allclose(inputs[b], normalised(images[label] / 255.0),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------- defaults of the official code ---


def test_whole_image_views_are_the_images():
  # The official jigsaw and the denoising autoencoder see the image itself
  # (jigsaw: the central square, unflipped); the default recipe's view of a
  # square image is that image.
  images = toy_images(n=4)
  for name in ("jigsaw", "denoising_autoencoder"):
    augment = inspect.signature(methods.get(name)).parameters[
        "augment"].default
    view = _shared.views(augment).make(jax.random.key(0), {"image": images},
                                       count=1, normalize=False)[0]
    np.testing.assert_allclose(view, images / 255.0, atol=1e-6)


def test_default_heads_follow_the_official_networks():
  # RotNet (NIN): a linear classifier on pooled features; jigsaw: fc7 4096
  # and fc8 to the 1000 permutations; exemplar (64c5-128c5-256c5-512f): one
  # 512-unit layer before the N-way softmax.
  shapes = {}
  for name, size in (("rotation", 16), ("jigsaw", 30), ("exemplar", 16)):
    method = methods.get(name)(backbone="tiny_cnn")
    params, _, _ = jax.eval_shape(method.init, jax.random.key(0),
                                  jnp.zeros((2, size, size, 1), jnp.uint8))
    layers = params["classifier"]["layers"]
    shapes[name] = [layers[k]["kernel"].shape for k in sorted(layers)
                    if k.startswith("linear")]
  assert shapes == {"rotation": [(8, 4)],
                    "jigsaw": [(72, 4096), (4096, 1000)],
                    "exemplar": [(8, 512), (512, 8000)]}


# ----------------------------------- precision, sharding, the train loop ---


def _loss_fn(method, images):
  params, model_state, state = method.init(jax.random.key(0), images)
  return jax.jit(lambda batch: method.loss(
      params, model_state, state, batch, jax.random.key(1), 0)[0])


@pytest.mark.parametrize("name", ["rotation", "context_encoder"])
def test_bfloat16_compute_gives_a_close_float32_loss(name):
  images = jnp.asarray(toy_images(n=BATCH))
  losses = {}
  for dtype in ("float32", "bfloat16"):
    value = _loss_fn(build(name, dtype=dtype), images)({"image": images})
    assert value.dtype == jnp.float32 and np.isfinite(value)
    losses[dtype] = float(value)
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=5e-2)


@pytest.mark.parametrize("name", ["jigsaw", "denoising_autoencoder",
                                  "exemplar"])
def test_loss_on_a_batch_sharded_over_8_devices_is_the_global_loss(name):
  """Global view: the label makers draw per example and BatchNorm is over
  the global batch, so sharding the batch changes nothing."""
  images = jnp.asarray(toy_images(n=BATCH))
  loss = _loss_fn(build(name), images)
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(loss({"image": sharded}),
                             loss({"image": images}), rtol=1e-5)


def test_train_loop_checkpoints_and_restores_the_method_state(tmp_path):
  """exemplar through `train.train` on all devices: its NamedTuple state
  is saved and restored with the run."""
  method = build("exemplar", num_exemplars=12)
  config = optimizer_config(total_steps=2, mesh_data=-1)
  config.update(dict(dataset=dict(name="synthetic"), batch_size=8, seed=0,
                     checkpoint_every=2, log_every=1))
  images = toy_images(n=16)
  records = [{"image": image, "label": 0} for image in images]
  metrics = train.train(config, str(tmp_path), method=method,
                        data=data.pipeline(records, batch_size=8))
  assert metrics["step"] == 2 and np.isfinite(metrics["loss"])
  state = train.restore_state(config, str(tmp_path),
                              image_shape=(SIZE, SIZE, 1), method=method)
  assert isinstance(state.method_state, MODULES["exemplar"].ExemplarState)
  assert int(state.method_state.count) == 12
  assert np.asarray(state.method_state.exemplars).max() > 0


@pytest.mark.parametrize("name, kwargs, match", [
    ("rotation", dict(view_batchnorm="split"), "view_batchnorm"),
    ("rotation", dict(head_layers=0), "rotation: `head_layers`"),
    ("exemplar", dict(head_hidden_dim=0), "head_hidden_dim"),
    ("jigsaw", dict(num_permutations=400_000), "num_permutations"),
    ("jigsaw", dict(num_permutations=0), "num_permutations"),
    ("relative_patch", dict(chromatic="blur"), "chromatic"),
    ("relative_patch", dict(view_batchnorm="split"), "view_batchnorm"),
    ("relative_patch", dict(blur_prob=-0.1), "blur_prob"),
    ("denoising_autoencoder", dict(corruption="blur"), "corruption"),
    ("denoising_autoencoder", dict(corruption_level=1.5), "corruption_level"),
    ("context_encoder", dict(mask="ring"), "mask"),
    ("context_encoder", dict(mask_fraction=1.5), "mask_fraction"),
    ("context_encoder", dict(overlap=-1), "overlap"),
    ("context_encoder", dict(decoder_width=0), "decoder_width"),
    ("colorization", dict(sigma=0.0), "sigma"),
    ("colorization", dict(neighbours=0), "neighbours"),
    ("exemplar", dict(num_exemplars=0), "num_exemplars"),
])
def test_bad_hyper_parameters_raise_at_construction(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(name, **kwargs)


# ---------------------------------------------------------------- decoder ---


@pytest.mark.parametrize("shape", [(28, 28, 1), (20, 12, 3)])
def test_decoder_produces_the_image_shape(shape):
  net = decoder.conv_decoder(shape, width=4)
  params, state = net.init(jax.random.key(0), jnp.ones((2, 5)))
  out, _ = net.apply(params, state, jnp.ones((2, 5)), train=True)
  assert out.shape == (2,) + shape
  with pytest.raises(ValueError, match="out_shape"):
    decoder.conv_decoder((28, 28))


# ------------------------------------------------- compose: siamese towers ---


@pytest.mark.parametrize("towers", ["joint", "per_view"])
def test_compose_towers_share_the_backbone_and_concatenate(towers):
  backbone = models.get("tiny_cnn")
  head = models.projector(None, 16, 5)
  net = models.compose(backbone, classifier=head, towers=towers)
  x = jax.random.normal(jax.random.key(0), (4, 3, 8, 8, 1))
  params, state = net.init(jax.random.key(1), x)
  assert sorted(params) == ["backbone", "classifier"]
  out, new_state = jax.jit(functools.partial(net.apply, train=True))(
      params, state, x)
  # By parts: one call over the 12 crops, or one per tower in order with the
  # BatchNorm statistics threading through.
  if towers == "joint":
    f, s_b = backbone.apply(params["backbone"], state["backbone"],
                            x.reshape(12, 8, 8, 1), train=True)
    f = f.reshape(4, 3, -1)
  else:
    s_b, parts = state["backbone"], []
    for t in range(3):
      f_t, s_b = backbone.apply(params["backbone"], s_b, x[:, t], train=True)
      parts.append(f_t)
    f = jnp.stack(parts, axis=1)
  logits, s_h = head.apply(params["classifier"], state["classifier"],
                           f.reshape(4, -1), train=True)
  # (jitted against op by op: float32 rounding.)
  np.testing.assert_allclose(out["features"], f, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-5),
               new_state, {"backbone": s_b, "classifier": s_h})


def test_compose_decoder_and_bad_towers():
  net = models.compose(models.get("tiny_cnn"),
                       decoder=decoder.conv_decoder((8, 8, 1), width=4))
  x = jnp.ones((2, 8, 8, 1))
  params, state = net.init(jax.random.key(0), x)
  out, _ = net.apply(params, state, x, train=False)
  assert out["reconstruction"].shape == (2, 8, 8, 1)
  assert out["features"].shape == (2, 8)
  with pytest.raises(ValueError, match="towers"):
    models.compose(models.get("tiny_cnn"), towers="shared")


# ---------------------------------------------------------------- configs ---


@pytest.mark.parametrize("name", NAMES)
def test_every_config_builds_for_every_preset(name):
  module = importlib.import_module(f"configs.{name}")
  default = "cifar10" if name == "colorization" else "mnist5k"
  assert module.get_config().dataset.name == default
  assert f"docs/fidelity.md#{name}" in module.__doc__
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    if preset != "imagefolder":  # Its size comes from the folder.
      assert 0 <= config.optimizer.warmup_steps < config.total_steps
    assert methods.build(config).name == name


def test_configs_carry_the_official_optimizer_groups():
  # RotNet's PyTorch SGD decays every parameter; the jigsaw's Caffe solver
  # neither decays biases nor keeps their rate (lr_mult 2); deepcontext's
  # SGD has no momentum and no decay; colourisation's Caffe decays all;
  # none of them warms up.
  want = {"rotation": dict(exclude_bias_and_norm=False),
          "jigsaw": dict(exclude_bias_and_norm=True, bias_lr_scale=2.0),
          "relative_patch": dict(momentum=0.0, weight_decay=0.0),
          "colorization": dict(exclude_bias_and_norm=False),
          "context_encoder": dict(momentum=0.5, weight_decay=0.0)}
  for name, fields in want.items():
    module = importlib.import_module(f"configs.{name}")
    for preset in ("cifar10", "imagenet2012"):
      optimizer = module.get_config(preset).optimizer
      assert optimizer.warmup_steps == 0, (name, preset)
      for key, value in fields.items():
        assert optimizer[key] == value, (name, preset, key)


@pytest.mark.parametrize("name", ["jigsaw", "relative_patch"])
def test_mnist5k_patch_backbone_keeps_a_map_on_the_crops(name):
  # configs/common.py, MNIST5K_PATCH_BACKBONE: on the task's own crops the
  # last map is 2×2 (1×1 with the other recipes' strides), and whole digits
  # give the 7×7 map the kNN and linear probe read.
  config = importlib.import_module(f"configs.{name}").get_config()
  view = jnp.asarray(toy_images(2, size=28), jnp.float32) / 255.0
  if name == "jigsaw":
    crops, _ = pretext.jigsaw_tiles(jax.random.key(0), view,
                                    pretext.permutation_set(10))
  else:
    crops = MODULES[name].task(jax.random.key(0), view,
                               config.method.chromatic).inputs
  backbone = _shared.setup(config.method.backbone,
                           config.method.backbone_kwargs,
                           config.method.augment, "float32").backbone
  params, model_state = backbone.init(jax.random.key(1), view)
  width = config.method.backbone_kwargs.widths[-1]
  for images, side in [(crops.reshape(-1, *crops.shape[2:]), 2), (view, 7)]:
    features, _ = jax.jit(functools.partial(backbone.apply, train=False))(
        params, model_state, images)
    assert features.shape == (images.shape[0], side * side * width)
