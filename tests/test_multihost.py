"""A real 2-process run (JAX distributed runtime, gloo CPU collectives on
loopback, 2 processes x 2 devices, one shared workdir) ends with the same loss
and parameters as 1 process x 4 devices (this test's process, on a 4-device
mesh)."""

import json
import os

import jax
import numpy as np
import pytest

import _multihost_toy as toy
from _multihost_launch import launch, wait_all
from ssljax import train
from ssljax.train import distributed
from ssljax.train.metrics import read_metrics


def test_two_processes_match_one_process(tmp_path):
  shared, single = tmp_path / "two_processes", tmp_path / "one_process"
  workers = launch(2, f"--workdir={shared}", "--devices=2",
                   f"--npz={tmp_path / 'two.npz'}")
  try:
    config = toy.make_config(**{"mesh.data": 4})
    images, labels = toy.toy_images()
    data = toy.ArrayIterator(images, labels, global_batch=config.batch_size)
    metrics = train.train(config, str(single), method=toy.TOY, data=data)
    params = train.restore_state(config, str(single), image_shape=(8, 8, 1),
                                 method=toy.TOY).params
  finally:
    outputs = wait_all(workers)
  for i, output in enumerate(outputs):
    assert f"process {i} done at step 6" in output, output[-3000:]

  two = assert_same_run(tmp_path / "two.npz", params, metrics, steps=6)

  # Only process 0 logged; both wrote the checkpoint, with both data states.
  assert [r["step"] for r in read_metrics(shared)] == list(range(1, 7))
  assert len([f for f in os.listdir(shared)
              if f.startswith("events.out.tfevents")]) == 1
  with open(shared / "checkpoints" / "6" / "data" / "metadata") as f:
    assert json.load(f) == {"processes": [{"position": 6}, {"position": 6}]}

  # Any number of processes and devices can load the state to evaluate it:
  # here 1 process x 8 devices.
  restored = train.restore_state(toy.make_config(), str(shared),
                                 image_shape=(8, 8, 1), method=toy.TOY)
  for path, leaf in jax.tree_util.tree_flatten_with_path(restored.params)[0]:
    np.testing.assert_array_equal(leaf, two[jax.tree_util.keystr(path)])


def assert_same_run(npz, tree, metrics, *, steps, rtol=1e-5, atol=1e-6):
  """The worker's saved `tree` and last loss equal this process's.

  `atol` covers the toy's conv bias: BatchNorm follows it, so its exact
  gradient is 0 and it drifts by float32 rounding only (~1e-7 after 7 steps,
  summed in a different order on 2 processes)."""
  two = np.load(npz)
  one = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
         jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert sorted(two.files) == sorted([*one, "loss", "step"])
  assert int(two["step"]) == metrics["step"] == steps
  np.testing.assert_allclose(two["loss"], metrics["loss"], rtol=rtol)
  for name, value in one.items():
    np.testing.assert_allclose(two[name], value, rtol=rtol, atol=atol,
                               err_msg=name)
  return two


def test_dataset_passes_on_two_processes_match_one_process(tmp_path):
  """CLUSTER_TOY on mnist5k: each process encodes its share of the split;
  the pass must still see the examples in dataset order, identically."""
  data_dir = tmp_path / "data"
  images, labels = toy.mnist5k_train(data_dir)  # built before the workers
  shared, single = tmp_path / "two_processes", tmp_path / "one_process"
  workers = launch(2, f"--workdir={shared}", "--devices=2", "--cluster",
                   f"--data_dir={data_dir}", f"--npz={tmp_path / 'two.npz'}",
                   "--total_steps=7")
  try:
    config = toy.cluster_config(data_dir, **{"mesh.data": 4})
    metrics = train.train(config, str(single), method=toy.CLUSTER_TOY,
                          data=toy.ArrayIterator(images, labels,
                                                 global_batch=64))
    state = train.restore_state(config, str(single), image_shape=(28, 28, 1),
                                method=toy.CLUSTER_TOY)
  finally:
    outputs = wait_all(workers)
  for i, output in enumerate(outputs):
    assert f"process {i} done at step 7" in output, output[-3000:]
  assert_same_run(tmp_path / "two.npz",
                  {"params": state.params,
                   "method_state": state.method_state},
                  metrics, steps=7)


CLUSTER_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                     "SLURM_PROCID", "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri")


def test_detect_cluster(monkeypatch):
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  assert distributed.detect_cluster() is None  # no libtpu here
  monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1.0;tcp://10.0.0.1:1234")
  assert distributed.detect_cluster() == "openmpi"
  for name in CLUSTER_VARIABLES[:-1]:
    monkeypatch.setenv(name, "1")
  assert distributed.detect_cluster() == "slurm"
  # Outside an srun step (no step node list) Slurm is not detected.
  monkeypatch.delenv("SLURM_STEP_NODELIST")
  assert distributed.detect_cluster() == "openmpi"


def test_initialize_without_a_cluster_runs_one_process(monkeypatch):
  for name in CLUSTER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize() is False
  assert jax.process_count() == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_processes=2), "coordinator_address, process_id"),
    (dict(coordinator_address="h:1", process_id=0), "num_processes"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2),
     "process_id"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=-1),
     "process_id")])
def test_initialize_rejects_incomplete_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize(**kwargs)
