"""Tests of the standard linear evaluation: `ssljax.evaluate.supervised` (the
loop it shares with fine-tuning), `ssljax.evaluate.protocols`' linear recipe
and classifier, and `experiments/linear_eval.py`.

The pre-trained run is 2 SimCLR steps of `tiny_cnn` on mnist5k; protocols
train on a 10% label subset (400 digits, 6 steps of 64 per epoch).
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import simclr as simclr_config
from ssljax import data, methods, train
from ssljax.evaluate import protocols, supervised
from ssljax.train import IncompatibleCheckpointError, make_mesh
from ssljax.train.metrics import read_metrics
from ssljax.train.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 10% of mnist5k's labels (400 digits), batches of 64: 6 steps an epoch.
SHORT = {"epochs": 2, "label_fraction": 0.1, "batch_size": 64,
         "checkpoint_every": 6, "log_every": 1}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """(config, workdir, restored state) of a 2-step SimCLR run."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = simclr_config.get_config(
      "mnist5k,total_steps=2,batch_size=32,checkpoint_every=2,log_every=1,"
      "method.backbone=tiny_cnn,method.backbone_kwargs={},"
      "method.proj_hidden_dim=16,method.proj_dim=8,optimizer.warmup_steps=1")
  config.unlock()
  config.data_dir = str(tmp_path_factory.mktemp("data"))
  train.train(config, workdir)
  state = train.restore_state(config, workdir, image_shape=(28, 28, 1))
  return config, workdir, state


def run_protocol(name, pretrained, workdir, **overrides):
  config, _, state = pretrained
  return protocols.run(name, config, state, str(workdir),
                       overrides={**SHORT, **overrides})


def losses(directory):
  return [(r["step"], r["loss"]) for r in read_metrics(directory)]


def run_cli(script, *flags):
  """Runs experiments/<script> on one CPU device; returns its last line."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", script), *flags],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
      check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout.strip().splitlines()[-1]


# ------------------------------------------------------------- recipes ---


def test_linear_recipes_follow_the_official_code():
  def run(name, dataset="cifar10", backbone="resnet18"):
    return ml_collections.ConfigDict(dict(
        method=dict(name=name, backbone=backbone),
        dataset=dict(name=dataset)))

  default = protocols.linear_protocol(run("simclr"))
  assert (default.epochs, default.batch_size) == (100, 256)
  opt = default.optimizer
  assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay,
          opt.schedule, opt.nesterov) == ("sgd", 0.1, 0.9, 0.0, "cosine",
                                          False)
  assert (default.views.scale, default.views.flip_prob) == ((0.08, 1.0), 0.5)
  moco = protocols.linear_protocol(run("moco_v2")).optimizer
  assert (moco.learning_rate, moco.schedule, moco.milestones) == (
      30.0, "step", (0.6, 0.8))
  assert protocols.linear_protocol(run("dino")).optimizer.learning_rate == \
      1e-3
  assert protocols.linear_protocol(run("moco_v3")).epochs == 90
  digits = protocols.linear_protocol(run("simclr", "mnist5k"))
  assert (digits.views.scale, digits.views.flip_prob) == ((0.5, 1.0), 0.0)
  assert digits.dataset.name == "mnist5k"
  assert digits.pretrained.fingerprint


def test_learning_rate_schedules_match_the_official_formulas():
  protocol = protocols.base_protocol("linear")
  protocol.update(epochs=10, batch_size=512)
  protocol.optimizer.learning_rate = 0.1
  steps, peak = 3, 0.2
  cosine = supervised.learning_rate_schedule(protocol, steps)
  # MoCo v3 / DINO: lr_e = peak · ½(1 + cos(π e / E)) at each epoch start.
  for epoch in range(10):
    assert float(cosine(epoch * steps)) == pytest.approx(
        peak * 0.5 * (1 + np.cos(np.pi * epoch / 10)), rel=1e-5)
  # MoCo v1/v2 main_lincls: lr × 0.1 for each milestone epoch passed.
  protocol.optimizer.update(schedule="step", milestones=(0.6, 0.8))
  step = supervised.learning_rate_schedule(protocol, steps)
  for t in range(30):
    epoch = t // steps
    expected = peak * 0.1 ** sum(epoch >= m for m in (6, 8))
    assert float(step(t)) == pytest.approx(expected, rel=1e-5)
  # MAE lr_sched, per iteration: warm-up, then half-cycle cosine to min_lr.
  protocol.optimizer.update(schedule="cosine", warmup_epochs=2,
                            min_learning_rate=1e-3)
  mae = supervised.learning_rate_schedule(protocol, steps)
  for t in range(30):
    epoch = t / steps
    expected = peak * epoch / 2 if epoch < 2 else 1e-3 + (peak - 1e-3) * \
        0.5 * (1 + np.cos(np.pi * (epoch - 2) / 8))
    assert float(mae(t)) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_sgd_matches_pytorchs_update():
  """optax's SGD (weight decay added to the gradient, heavy-ball momentum)
  against torch.optim.SGD's update written out in numpy."""
  protocol = protocols.base_protocol("linear")
  protocol.optimizer.update(weight_decay=0.1, learning_rate=0.5)
  schedule = optax.linear_schedule(0.5, 0.1, 4)
  classifier = supervised.Classifier(None, None, (), ())
  tx = supervised.make_optimizer(protocol, schedule, classifier)
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(3, 2)).astype(np.float32),
            "b": rng.normal(size=2).astype(np.float32)}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32)
            for k, v in params.items()} for _ in range(4)]
  state = tx.init(params)
  expected = {k: v.astype(np.float64) for k, v in params.items()}
  buffers = {k: np.zeros_like(v) for k, v in expected.items()}
  for t, g in enumerate(grads):
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    for k in expected:
      decay = 0.1 if k == "w" else 0.0  # rank <= 1 excluded by default
      d = g[k] + decay * expected[k]
      buffers[k] = 0.9 * buffers[k] + d
      expected[k] = expected[k] - float(schedule(t)) * buffers[k]
  for k in expected:
    np.testing.assert_allclose(params[k], expected[k], rtol=1e-5, atol=1e-6)


def test_cross_entropy_with_smoothing_matches_timm():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(5, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 1, 2])
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  nll = -log_p[np.arange(5), labels]
  expected = np.mean(0.9 * nll + 0.1 * -log_p.mean(1))
  got = supervised.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                 num_classes=4, smoothing=0.1)
  assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", 0), ("label_fraction", 0.0),
    ("label_smoothing", 1.0), ("optimizer.name", "lars"),
    ("optimizer.schedule", "linear"), ("optimizer.learning_rate", 0.0),
    ("optimizer.momentum", 1.0), ("optimizer.layer_decay", 1.5),
    ("optimizer.warmup_epochs", 100), ("optimizer.milestones", (0.8, 0.6)),
    ("views.scale", (0.5, 0.2)), ("views.flip_prob", 2.0)])
def test_bad_protocol_fields_are_named(field, value):
  protocol = protocols.base_protocol("linear")
  protocol.optimizer.schedule = "step"  # The schedule that reads milestones.
  *parents, leaf = field.split(".")
  node = protocol
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(ValueError, match=f"`{field}`"):
    supervised.check(protocol)


def test_milestones_are_checked_only_for_the_step_schedule():
  protocol = protocols.base_protocol("finetune")
  protocol.epochs, protocol.optimizer.warmup_epochs = 6, 5
  supervised.check(protocol)  # A cosine: the milestones (0.6, 0.8) unused.
  protocol.optimizer.schedule = "step"
  with pytest.raises(ValueError, match="`optimizer.milestones`"):
    supervised.check(protocol)


# --------------------------------------------------------------- views ---


def test_views_are_a_resized_crop_and_a_flip_only():
  images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3),
                                             dtype=np.uint8)
  whole = supervised.view_spec(
      ml_collections.ConfigDict(dict(views=dict(
          scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=1.0))), 8)
  assert (whole.jitter_prob, whole.grayscale_prob, whole.blur_prob,
          whole.solarize_prob) == (0, 0, 0, 0)
  views = jax.jit(supervised.make_views(whole))
  flipped = views(jax.random.key(0), {"image": images})
  np.testing.assert_array_equal(flipped, images[:, :, ::-1])
  # Host crops (variable-size data) are only flipped on the device.
  np.testing.assert_array_equal(
      views(jax.random.key(0), {"crops": (images,)}), images[:, :, ::-1])
  crop = supervised.make_views(whole._replace(size=4, scale=(0.2, 0.5),
                                              ratio=(0.75, 1.33)))
  made = crop(jax.random.key(1), {"image": images})
  assert made.shape == (4, 4, 4, 3) and made.dtype == jnp.uint8


# ------------------------------------------------------------ classifier ---


def test_linear_classifier_trains_only_a_linear_layer(pretrained):
  config, _, state = pretrained
  method = methods.build(config)
  classifier = protocols.linear_classifier(
      method, state.params, state.model_state, state.method_state,
      num_classes=10)
  images = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1),
                                             dtype=np.uint8)
  head, model_state = classifier.init(jax.random.key(3), classifier.source,
                                      images)
  assert model_state == () and float(jnp.abs(head.bias).max()) == 0.0
  features = np.asarray(method.encode(state.params, state.model_state,
                                      state.method_state, images))
  labels = np.arange(16) % 10

  def loss(head, frozen):
    logits, _ = classifier.apply(head, (), frozen, images, train=True)
    return supervised.cross_entropy(logits, labels, num_classes=10)

  head_grad, frozen_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(
      head, classifier.frozen)
  logits = features @ np.asarray(head.weights) + np.asarray(head.bias)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  residual = (p - np.eye(10)[labels]) / 16
  np.testing.assert_allclose(head_grad.weights, features.T @ residual,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(head_grad.bias, residual.sum(0), rtol=1e-4,
                             atol=1e-6)
  assert all(float(jnp.abs(g).max()) == 0.0
             for g in jax.tree.leaves(frozen_grad))


def test_score_is_top1_and_top5_over_every_test_image(pretrained, tmp_path):
  """`score` against numpy on the 1,000 test digits, with a fixed
  classifier whose logits are a function of the mean pixel."""
  config, _, _ = pretrained
  protocol = protocols.linear_protocol(config)

  def apply(params, model_state, frozen, images, *, train):
    del params, frozen, train
    mean = jnp.mean(images.astype(jnp.float32), axis=(1, 2, 3))
    return -jnp.abs(mean[:, None] / 5.0 - jnp.arange(10.0)), model_state

  classifier = supervised.Classifier(None, apply, (), ())
  state = TrainState(jnp.zeros((), jnp.int32), (), (), (), (),
                     jax.random.key(0))
  got = supervised.score(protocol, classifier, state, make_mesh())
  (batch,) = data.load("mnist5k", "test", batch_size=1000, shuffle=False,
                       num_epochs=1, data_dir=config.data_dir)
  mean = batch["image"].reshape(1000, -1).astype(np.float64).mean(1)
  ranks = np.argsort(np.abs(mean[:, None] / 5 - np.arange(10)), axis=1,
                     kind="stable")
  assert got["linear_top1"] == pytest.approx(
      np.mean(ranks[:, 0] == batch["label"]))
  assert got["linear_top5"] == pytest.approx(
      np.mean(np.any(ranks[:, :5] == batch["label"][:, None], axis=1)))


# ---------------------------------------------------------- the loop ---


@pytest.fixture(scope="module")
def finished(pretrained, tmp_path_factory):
  """A finished short linear evaluation on the 8 fake devices."""
  workdir = tmp_path_factory.mktemp("linear")
  protocol, result = run_protocol("linear", pretrained, workdir)
  return workdir, protocol, result


def test_linear_evaluation_trains_and_scores(finished):
  workdir, protocol, result = finished
  assert protocols.directory(protocol) == "linear_10pct"
  assert protocol.pretrained.step == 2
  assert set(result) == {"step", "linear_top1", "linear_top5"}
  assert result["step"] == 12
  assert 0 <= result["linear_top1"] <= result["linear_top5"] <= 1
  records = read_metrics(workdir / "linear_10pct")
  assert [r["step"] for r in records] == list(range(1, 13))
  assert all(np.isfinite(r["loss"]) for r in records)
  assert sorted(os.listdir(workdir / "linear_10pct" / "checkpoints")) == \
      ["12", "6"]


def test_an_interrupted_evaluation_resumes_exactly(pretrained, finished,
                                                   tmp_path):
  workdir, _, result = finished
  shutil.copytree(workdir, tmp_path / "run")
  shutil.rmtree(tmp_path / "run" / "linear_10pct" / "checkpoints" / "12")
  _, resumed = run_protocol("linear", pretrained, tmp_path / "run")
  assert resumed == result
  assert losses(tmp_path / "run" / "linear_10pct") == \
      losses(workdir / "linear_10pct")


def test_one_device_equals_eight(pretrained, finished, tmp_path):
  workdir, _, result = finished
  _, single = run_protocol("linear", pretrained, tmp_path,
                           **{"mesh.data": 1})
  np.testing.assert_allclose(
      np.array(losses(tmp_path / "linear_10pct")),
      np.array(losses(workdir / "linear_10pct")), rtol=1e-5, atol=1e-6)
  assert single["linear_top1"] == pytest.approx(result["linear_top1"],
                                                abs=2e-3)


def test_another_protocol_in_the_same_directory_is_refused(pretrained,
                                                           finished):
  workdir, _, _ = finished
  with pytest.raises(IncompatibleCheckpointError, match="learning_rate"):
    run_protocol("linear", pretrained, workdir,
                 **{"optimizer.learning_rate": 0.5})


def test_a_batch_larger_than_the_labels_is_refused(pretrained, tmp_path):
  with pytest.raises(ValueError, match="batch_size.*400 labelled"):
    run_protocol("linear", pretrained, tmp_path, batch_size=512)
  config, _, state = pretrained
  with pytest.raises(ValueError, match="`name`"):
    protocols.run("probe", config, state, str(tmp_path))


# -------------------------------------------------------- command line ---


def test_command_line_reports_the_protocol_and_the_monitors(pretrained):
  _, workdir, _ = pretrained
  line = run_cli("linear_eval.py", f"--workdir={workdir}",
                 "--protocol.epochs=1", "--protocol.label_fraction=0.1",
                 "--protocol.batch_size=64")
  assert line.startswith("simclr on mnist5k, step 2: knn_top1=")
  names = [word.split("=")[0] for word in line.split(": ", 1)[1].split()]
  assert names[:2] == ["knn_top1", "linear_top1"] and "probe_top1" in names
  with open(os.path.join(workdir, "linear_eval_10pct.json"),
            encoding="utf-8") as f:
    result = json.load(f)
  assert {"linear_top1", "linear_top5", "knn_top1", "probe_top1",
          "rankme"} <= set(result)
  assert os.path.isdir(os.path.join(workdir, "linear_10pct", "checkpoints"))
