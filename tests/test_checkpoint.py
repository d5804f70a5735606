"""The train loop's checkpoints: exact resume, SIGTERM, refusal, NaN stop."""

import hashlib
import json
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
import pytest

import _multihost_toy as toy
from _multihost_launch import launch, wait_all
from ssljax import train
from ssljax.train import checkpoint
from ssljax.train.metrics import read_metrics


def run(config, workdir, hooks=()):
  images, labels = toy.toy_images()
  data = toy.ArrayIterator(images, labels, global_batch=config.batch_size)
  return train.train(config, str(workdir), data=data,
                     hooks=hooks)


def load(config, workdir, step=None):
  return train.restore_state(config, str(workdir), image_shape=(8, 8, 1),
                             step=step)


def host_leaves(state):
  state = state._replace(rng=jax.random.key_data(state.rng))
  return [np.array(x) for x in jax.tree.leaves(state)]


def without_timing(records):
  return [{k: v for k, v in r.items() if k != "images_per_sec"}
          for r in records]


def snapshot(directory):
  """{relative path: sha256} of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = hashlib.sha256(
            f.read()).hexdigest()
  return files


def sigterm_at(step):
  """A hook that sends this process SIGTERM after `step` (a preemption)."""
  def hook(current, state):
    del state
    if current == step:
      signal.raise_signal(signal.SIGTERM)
  return hook


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """6 uninterrupted steps (checkpoints at 3 and 6)."""
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, run(toy.make_config(), workdir)


def test_uninterrupted_run_writes_its_workdir(straight):
  workdir, metrics = straight
  assert metrics["step"] == 6 and np.isfinite(metrics["loss"])
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  for record in records:
    assert {"loss", "images_per_sec", "learning_rate", "grad_norm"} <= set(
        record)
  assert sorted(os.listdir(workdir / checkpoint.CHECKPOINT_DIR)) == ["3", "6"]
  with open(workdir / "config.json") as f:
    assert json.load(f)["total_steps"] == 6
  assert any(name.startswith("events.out.tfevents")
             for name in os.listdir(workdir))


def test_resume_is_exact(straight, tmp_path):
  """6 steps straight == 3 steps, preemption, restart, 3 steps: the same
  state bit for bit and the same logged metrics."""
  straight_dir, straight_metrics = straight
  config = toy.make_config()
  first = run(config, tmp_path, hooks=[sigterm_at(3)])
  assert first["step"] == 3
  assert checkpoint.Checkpointer(tmp_path).latest_step() == 3
  second = run(config, tmp_path)
  assert second["step"] == 6
  assert without_timing([second]) == without_timing([straight_metrics])
  assert without_timing(read_metrics(tmp_path)) == without_timing(
      read_metrics(straight_dir))
  for resumed, uninterrupted in zip(host_leaves(load(config, tmp_path)),
                                    host_leaves(load(config, straight_dir))):
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path):
  total = 40
  [process] = launch(1, f"--workdir={tmp_path}", "--devices=2",
                     f"--total_steps={total}", "--step_sleep=0.2")
  deadline = time.time() + 240
  while len(read_metrics(tmp_path)) < 2:
    assert process.poll() is None, wait_all([process])
    assert time.time() < deadline
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  [output] = wait_all([process])
  assert "SIGTERM received" in output
  saved = checkpoint.Checkpointer(tmp_path).latest_step()
  assert 2 <= saved < total
  assert [r["step"] for r in read_metrics(tmp_path)][-1] == saved

  metrics = run(toy.make_config(total_steps=total), tmp_path)
  assert metrics["step"] == total
  assert [r["step"] for r in read_metrics(tmp_path)] == list(
      range(1, total + 1))


def test_incompatible_checkpoint_is_refused_and_left_untouched(straight):
  workdir, _ = straight
  before = snapshot(workdir)
  config = toy.make_config(**{"optimizer.learning_rate": 0.1,
                              "method.dim": 4})
  with pytest.raises(train.IncompatibleCheckpointError) as error:
    run(config, workdir)
  message = str(error.value)
  assert str(workdir) in message and "step 6" in message
  assert "config.optimizer.learning_rate: 0.5 in the checkpoint, 0.1 now" in (
      message)
  assert "config.method.dim: 8 in the checkpoint, 4 now" in message
  assert ".params['proj']['kernel']: ([8, 8], 'float32') in the checkpoint, " \
         "([8, 4], 'float32') now" in message
  assert snapshot(workdir) == before


def test_non_trajectory_fields_may_change_on_resume(straight):
  workdir, _ = straight
  config = toy.make_config(log_every=5, checkpoint_every=2, max_to_keep=1)
  assert checkpoint.fingerprint(config) == checkpoint.fingerprint(
      toy.make_config())
  assert checkpoint.fingerprint(toy.make_config(seed=1)) != (
      checkpoint.fingerprint(config))
  # The run is complete: resuming it restores step 6 and trains no further.
  assert run(config, workdir)["step"] == 6


def test_foreign_checkpoint_is_refused(tmp_path):
  import orbax.checkpoint as ocp  # only to forge a checkpoint without `meta`
  directory = tmp_path / checkpoint.CHECKPOINT_DIR
  with ocp.CheckpointManager(directory) as manager:
    manager.save(1, args=ocp.args.Composite(
        other=ocp.args.JsonSave({"a": 1})))
  before = snapshot(tmp_path)
  with pytest.raises(train.IncompatibleCheckpointError, match="not an ssljax"):
    run(toy.make_config(), tmp_path)
  assert snapshot(tmp_path) == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # The 5th update (state.step 4) has a NaN loss. With log_every=100 it is
  # caught by the check that trails the step by one.
  config = toy.make_config(log_every=100, **{"method.nan_from_step": 4})
  with pytest.raises(FloatingPointError, match=r"at step 5\b") as error:
    run(config, tmp_path)
  assert "last good checkpoint" in str(error.value)
  assert "is step 3" in str(error.value)
  assert sorted(os.listdir(tmp_path / checkpoint.CHECKPOINT_DIR)) == ["3"]
  state = load(config, tmp_path)
  assert int(state.step) == 3
  assert all(np.all(np.isfinite(x)) for x in host_leaves(state))
  assert [r["step"] for r in read_metrics(tmp_path)] == [3]


def test_config_fields_and_structure():
  config = ml_collections.ConfigDict(dict(
      seed=3, log_every=1, mesh=dict(data=2), optimizer=dict(name="sgd")))
  assert checkpoint.config_fields(config) == {"optimizer.name": "sgd",
                                              "seed": 3}
  assert checkpoint.structure({"a": np.zeros((2, 1), np.int8)}) == [
      ["['a']", [2, 1], "int8"]]


def test_watch_preemption_restores_the_handler_and_skips_threads():
  previous = signal.getsignal(signal.SIGTERM)
  with train.watch_preemption() as preempted:
    assert signal.getsignal(signal.SIGTERM) is not previous
    assert not preempted(1)
    signal.raise_signal(signal.SIGTERM)
    assert preempted(2)
  assert signal.getsignal(signal.SIGTERM) is previous

  # Outside the main thread no handler can be installed: never preempted.
  seen = []

  def in_thread():
    with train.watch_preemption() as preempted:
      seen.append(preempted(1))

  thread = threading.Thread(target=in_thread)
  thread.start()
  thread.join()
  assert seen == [False] and signal.getsignal(signal.SIGTERM) is previous
