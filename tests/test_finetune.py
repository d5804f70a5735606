"""Tests of fine-tuning (`ssljax.evaluate.protocols`' fine-tuning recipe,
classifier and layer-wise decay, `experiments/finetune.py`) and of the
labelled subsets (`ssljax.data.load(..., indices=...)`, `data.labels`).

The pre-trained run is the 2-step SimCLR run of `test_linear_eval`.
"""

import itertools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssljax import data, methods, models, train
from ssljax.data import _tf
from ssljax.evaluate import class_balanced_subset, protocols, supervised
from ssljax.train.metrics import read_metrics
from test_data_tf import N as TF_RECORDS, SsljaxTfFixed
# pylint: disable-next=unused-import
from test_linear_eval import (SHORT, losses, pretrained, run_cli,
                              run_protocol)


def paths(tree):
  return {"/".join(str(getattr(k, "key", getattr(k, "name", k)))
                   for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ---------------------------------------------------- layer-wise decay ---


def mae_layer_id(name, num_layers):
  """MAE's util/lr_decay.py get_layer_id_for_vit, on PyTorch names."""
  if name in ("cls_token", "pos_embed"):
    return 0
  if name.startswith("patch_embed"):
    return 0
  if name.startswith("blocks"):
    return int(name.split(".")[1]) + 1
  return num_layers


def test_vit_layer_scales_are_maes_param_groups_lrd():
  model = models.vit_tiny(patch_size=4, image_size=8, depth=3)
  params, _ = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 8, 8, 3)))
  scales = paths(protocols.layer_scales(params, 0.65))
  num_layers = 3 + 1  # len(model.blocks) + 1
  for path, scale in scales.items():
    # Our paths as PyTorch names: blocks/block2/fc1 -> blocks.2.fc1.
    name = path.replace("/block", ".").replace("/", ".")
    expected = 0.65 ** (num_layers - mae_layer_id(name, num_layers))
    assert scale == pytest.approx(expected), path
  assert scales["norm/scale"] == 1.0 and scales["cls_token"] == 0.65 ** 4


def test_fallback_layer_ids_of_resnets_and_cnns():
  resnet = models.get("resnet18", stem="cifar")
  params, _ = jax.eval_shape(resnet.init, jax.random.key(0),
                             jnp.zeros((1, 8, 8, 3)))
  ids, top = protocols.layer_ids(params)
  ids = paths(ids)
  assert top == 5
  for path, i in ids.items():
    expected = 0 if path.startswith("stem") else int(path.split("/")[1][-1])
    assert i == expected, path
  assert set(ids.values()) == {0, 1, 2, 3, 4}
  scales = paths(protocols.layer_scales(params, 0.5))
  assert scales["stages/stage4/block1/layers/conv_bn1/conv/kernel"] == 0.5
  assert scales["stem/conv/kernel"] == 0.5 ** 5

  cnn = models.get("small_cnn", widths=(4, 4, 4), strides=(1, 2, 2))
  params, _ = jax.eval_shape(cnn.init, jax.random.key(0),
                             jnp.zeros((1, 8, 8, 1)))
  scales = paths(protocols.layer_scales(params, 0.5))
  assert {p.split("/")[0]: s for p, s in scales.items()} == {
      "conv_bn0": 0.125, "conv_bn1": 0.25, "conv_bn2": 0.5}
  # A network whose layers are unknown is not decayed.
  assert protocols.layer_scales({"dense": {"kernel": 0.0}}, 0.5) == \
      {"dense": {"kernel": 1.0}}
  assert protocols.layer_id(("head", "kernel")) is None
  with pytest.raises(ValueError, match="layer_decay"):
    protocols.layer_scales({}, 0.0)


def test_finetune_recipe_is_maes():
  def run(backbone):
    return ml_collections.ConfigDict(dict(
        method=dict(name="mae", backbone=backbone),
        dataset=dict(name="cifar10")))

  vit = protocols.finetune_protocol(run("vit_small"))
  opt = vit.optimizer
  assert (opt.name, opt.learning_rate, opt.b2, opt.weight_decay,
          opt.warmup_epochs, opt.min_learning_rate, opt.layer_decay) == (
              "adamw", 5e-4, 0.999, 0.05, 5, 1e-6, 0.65)
  assert (vit.label_smoothing, vit.drop_path_rate, vit.epochs) == (
      0.1, 0.1, 100)
  resnet = protocols.finetune_protocol(run("resnet50"))
  assert (resnet.optimizer.layer_decay, resnet.drop_path_rate) == (1.0, 0.0)


def test_adamw_with_layer_scales_matches_pytorch_param_groups():
  """AdamW with per-group rate lr·scale and decay only on kernels not named
  pos_embed: torch.optim.AdamW's update written out in numpy."""
  net = models.vit_tiny(patch_size=4, image_size=8, depth=1)
  weights = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  classifier = protocols.finetune_classifier(
      net, *weights, num_classes=3, mean=(0.5,) * 3, std=(0.25,) * 3,
      layer_decay=0.5)
  params, _ = classifier.init(jax.random.key(1), classifier.source,
                              jnp.zeros((1, 8, 8, 3), jnp.uint8))
  mask = paths(classifier.decay_mask(params))
  assert not mask["backbone/pos_embed"] and not mask["backbone/cls_token"]
  assert not mask["backbone/norm/scale"] and not mask["head/bias"]
  assert mask["backbone/blocks/block0/fc1/kernel"] and mask["head/weights"]
  scales = paths(classifier.lr_scale(params))
  assert scales["head/weights"] == 1.0 and scales["backbone/pos_embed"] == 0.25

  protocol = protocols.base_protocol("finetune")
  protocol.optimizer.update(name="adamw", weight_decay=0.05, b2=0.99)
  schedule = optax.linear_schedule(1e-2, 1e-3, 3)
  tx = supervised.make_optimizer(protocol, schedule, classifier)
  state = tx.init(params)
  rng = np.random.default_rng(0)
  flat = {k: np.asarray(v, np.float64) for k, v in paths(params).items()}
  m = {k: np.zeros_like(v) for k, v in flat.items()}
  v = {k: np.zeros_like(x) for k, x in flat.items()}
  for t in range(3):
    grads = jax.tree.map(
        lambda x: rng.normal(size=x.shape).astype(np.float32), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for k, g in paths(grads).items():
      lr = float(schedule(t)) * scales[k]
      flat[k] *= 1 - lr * (0.05 if mask[k] else 0.0)
      m[k] = 0.9 * m[k] + 0.1 * g
      v[k] = 0.99 * v[k] + 0.01 * g * g
      m_hat, v_hat = m[k] / (1 - 0.9 ** (t + 1)), v[k] / (1 - 0.99 ** (t + 1))
      flat[k] -= lr * m_hat / (np.sqrt(v_hat) + 1e-8)
  for k, x in paths(params).items():
    np.testing.assert_allclose(x, flat[k], rtol=1e-4, atol=1e-6, err_msg=k)


# ------------------------------------------------------ the classifier ---


def test_finetuning_takes_the_network_encode_evaluates(pretrained):
  config, _, state = pretrained
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1),
                                             dtype=np.uint8)
  mean, std = protocols.normalization(config, 1)
  assert (mean, std) == ((0.1307,), (0.3081,))
  method = methods.build(config)
  backbone = protocols.backbone_of(config, method)
  weights = protocols.encoder_weights(method, backbone, state.params,
                                      state.model_state, state.method_state,
                                      images, mean=mean, std=std)
  assert weights[0] is state.params["backbone"]
  with pytest.raises(ValueError, match="neither its backbone"):
    protocols.encoder_weights(method, backbone, state.params,
                              state.model_state, state.method_state,
                              images, mean=(0.5,), std=(0.5,))

  # DINO evaluates its teacher, the EMA target.
  dino = methods.dino(backbone="tiny_cnn", hidden_dim=8, bottleneck_dim=4,
                      out_dim=8, augment={"preset": "multicrop",
                                          "num_local": 0})
  params, model_state, dino_state = dino.init(jax.random.key(0), images)
  teacher = dino_state.target._replace(params=jax.tree.map(
      lambda x: x + 0.5, dino_state.target.params))
  dino_state = dino_state._replace(target=teacher)
  weights = protocols.encoder_weights(
      dino, models.tiny_cnn(), params, model_state, dino_state, images,
      mean=mean, std=std)
  assert weights[0] is teacher.params["backbone"]


def test_step_zero_is_the_runs_initialisation(pretrained, tmp_path):
  """`restore_state(step=0)`, the from-scratch baseline, is the network the
  run started from: the parameters its first update left unchanged (the
  update at rate 0 that starts SimCLR's warm-up), not those it trained."""
  config, _, trained = pretrained
  config = ml_collections.ConfigDict(config.to_dict())
  config.total_steps, config.checkpoint_every = 1, 1
  workdir = str(tmp_path / "one_step")
  train.train(config, workdir)
  after_one = train.restore_state(config, workdir, image_shape=(28, 28, 1))
  assert read_metrics(workdir)[0]["learning_rate"] == 0.0
  initial = train.restore_state(config, workdir, image_shape=(28, 28, 1),
                                step=0)
  assert int(initial.step) == 0 and int(after_one.step) == 1
  for a, b in zip(jax.tree.leaves(initial.params),
                  jax.tree.leaves(after_one.params)):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(initial.params), jax.tree.leaves(trained.params)))

  protocol, result = protocols.run(
      "finetune", config, initial, workdir, named_step=True,
      overrides={**SHORT, "epochs": 1, "optimizer.warmup_epochs": 0})
  assert protocol.pretrained.step == 0
  assert protocols.directory(protocol, True) == "finetune_10pct_step0"
  assert os.path.isdir(os.path.join(workdir, "finetune_10pct_step0"))
  assert 0.0 <= result["finetune_top1"] <= 1.0


def test_finetune_classifier_trains_batchnorm_and_keeps_drop_path_state():
  net = models.tiny_cnn(width=4)
  images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1),
                                             dtype=np.uint8)
  weights = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  classifier = protocols.finetune_classifier(
      net, *weights, num_classes=3, mean=(0.5,), std=(0.25,))
  params, state = classifier.init(jax.random.key(1), classifier.source,
                                  images)
  _, trained = classifier.apply(params, state, (), images, train=True)
  _, evaluated = classifier.apply(params, state, (), images, train=False)
  assert not np.allclose(paths(trained)["conv_bn0/bn/mean"], 0.0)
  np.testing.assert_array_equal(paths(evaluated)["conv_bn0/bn/mean"],
                                paths(state)["conv_bn0/bn/mean"])
  # A ViT fine-tuned with drop path gets the stream of its masks.
  vit = models.vit_tiny(patch_size=4, image_size=8, depth=1)
  weights = vit.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  dropping = models.vit_tiny(patch_size=4, image_size=8, depth=1,
                             drop_path_rate=0.1)
  classifier = protocols.finetune_classifier(
      dropping, *weights, num_classes=3, mean=(0.5,), std=(0.25,))
  params, state = classifier.init(jax.random.key(1), classifier.source,
                                  images)
  assert weights[1] == {} and "drop_rngs" in state
  logits, _ = classifier.apply(params, state, (), images, train=True)
  assert logits.shape == (8, 3)


# ------------------------------------------------------ labelled subsets ---


def test_label_subsets_are_fixed_balanced_and_read_alone(pretrained):
  config, _, _ = pretrained
  protocol = protocols.finetune_protocol(config)
  protocol.label_fraction = 0.01
  info = data.info("mnist5k")
  rows = supervised.labelled_rows(protocol, info)
  labels = data.labels("mnist5k", "train", data_dir=config.data_dir)
  np.testing.assert_array_equal(
      rows, class_balanced_subset(labels, 0.01, num_classes=10, seed=0))
  np.testing.assert_array_equal(rows, supervised.labelled_rows(protocol,
                                                               info))
  assert len(rows) == 40 and np.bincount(labels[rows]).min() >= 3
  # The digits themselves give the labels data.labels reads.
  (train,) = data.load("mnist5k", "train", batch_size=4000, shuffle=False,
                       num_epochs=1, data_dir=config.data_dir)
  np.testing.assert_array_equal(train["label"], labels)
  it = data.load("mnist5k", "train", batch_size=8, data_dir=config.data_dir,
                 indices=rows, seed=3)
  for _ in range(2):  # two epochs, each every labelled digit once
    batches = list(itertools.islice(it, 5))
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index) == sorted(rows)
    for b in batches:
      np.testing.assert_array_equal(b["label"], labels[b["index"]])
      np.testing.assert_array_equal(b["image"], train["image"][b["index"]])


@pytest.mark.parametrize("indices, match", [
    ([], "at least one"), ([1, 1], "distinct"), ([4000], r"\[0, 4000\)"),
    ([[1, 2]], "distinct int rows"), ([0.5], "distinct int rows")])
def test_bad_indices_are_refused(pretrained, indices, match):
  config, _, _ = pretrained
  with pytest.raises(ValueError, match=match):
    data.load("mnist5k", "train", batch_size=2, data_dir=config.data_dir,
              indices=indices)
  with pytest.raises(ValueError, match="not both"):
    data.load("mnist5k", "train", batch_size=2, data_dir=config.data_dir,
              indices=[1, 2], classes_per_batch=2)


def test_tf_data_subsets_and_labels(tmp_path):
  # The test command installs the `tf` extra.
  import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
  builder = SsljaxTfFixed(data_dir=str(tmp_path))
  builder.download_and_prepare()
  labels = _tf.labels("test", "ssljax_tf_fixed", "train",
                      data_dir=str(tmp_path))
  options = dict(seed=0, drop_remainder=True, process_index=0,
                 process_count=1, name="test")
  (every,) = _tf.iterate(builder, "train", batch_size=TF_RECORDS,
                         shuffle=False, num_epochs=1, **options)
  np.testing.assert_array_equal(labels[every["index"]], every["label"])
  rows = np.array([3, 7, 8, 20, 31])
  images = every["image"][np.argsort(every["index"])][rows]
  subset = _tf.iterate(builder, "train", batch_size=5, shuffle=True,
                       num_epochs=2, indices=rows, **options)
  for batch in subset:  # each epoch: the five rows, nothing else
    order = np.argsort(batch["index"])
    np.testing.assert_array_equal(batch["index"][order], rows)
    np.testing.assert_array_equal(batch["image"][order], images)


# ---------------------------------------------------------- the loop ---


@pytest.fixture(scope="module")
def finished(pretrained, tmp_path_factory):
  """A finished short fine-tuning on the 8 fake devices."""
  workdir = tmp_path_factory.mktemp("finetune")
  overrides = {"optimizer.warmup_epochs": 1,
               "optimizer.learning_rate": 1e-2}
  return workdir, overrides, run_protocol("finetune", pretrained, workdir,
                                          **overrides)


def test_finetuning_resumes_exactly_and_matches_one_device(pretrained,
                                                           finished,
                                                           tmp_path):
  workdir, overrides, (protocol, result) = finished
  assert protocols.directory(protocol) == "finetune_10pct"
  assert set(result) == {"step", "finetune_top1", "finetune_top5"}
  # 12 steps of 64 of 400 digits after 2 pre-training steps of a tiny CNN.
  assert result["finetune_top1"] > 0.15
  records = read_metrics(workdir / "finetune_10pct")
  assert records[-1]["loss"] < records[0]["loss"]
  shutil.copytree(workdir, tmp_path / "run")
  shutil.rmtree(tmp_path / "run" / "finetune_10pct" / "checkpoints" / "12")
  _, resumed = run_protocol("finetune", pretrained, tmp_path / "run",
                            **overrides)
  assert resumed == result
  assert losses(tmp_path / "run" / "finetune_10pct") == \
      losses(workdir / "finetune_10pct")
  # BatchNorm statistics are those of the global batch on any mesh.
  _, single = run_protocol("finetune", pretrained, tmp_path / "one",
                           **overrides, **{"mesh.data": 1})
  np.testing.assert_allclose(
      np.array(losses(tmp_path / "one" / "finetune_10pct")),
      np.array(losses(workdir / "finetune_10pct")), rtol=1e-4, atol=1e-5)
  assert single["finetune_top1"] == pytest.approx(result["finetune_top1"],
                                                  abs=3e-3)


def test_command_line_fine_tunes_a_label_fraction(pretrained):
  _, workdir, _ = pretrained
  line = run_cli("finetune.py", f"--workdir={workdir}", "--label_fraction=0.1",
                 "--protocol.epochs=1", "--protocol.batch_size=64",
                 "--protocol.optimizer.warmup_epochs=0")
  assert line.startswith("simclr on mnist5k, step 2: finetune_top1=")
  with open(os.path.join(workdir, "finetune_10pct.json"),
            encoding="utf-8") as f:
    assert {"finetune_top1", "finetune_top5", "step"} <= set(json.load(f))
