"""Many hosts equal one on the real path: `experiments/pretrain.py` (SimCLR
on mnist5k through `ssljax.data.load` and `ssljax.train.train`; the metric
method through the class-balanced P×K batches) logs the same loss at every
step with 2 processes × 2 devices as with 1 process × 4 devices: the global
batch and every example's views are independent of the process count, and
so is the evaluation of the run.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _multihost_launch import free_port
from ssljax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = ["--config.total_steps=4", "--config.batch_size=32",
         "--config.optimizer.warmup_steps=1", "--config.checkpoint_every=4",
         "--config.log_every=1", "--config.eval_every=0",
         "--config.method.backbone_kwargs.widths=(8,8)",
         "--config.method.backbone_kwargs.strides=(1,2)",
         "--config.method.proj_hidden_dim=16", "--config.method.proj_dim=8"]


# The methods' configs and their extra flags: metric's P×K batches, 8
# classes of 4 examples each.
METHODS = {"simclr": [],
           "metric": ["--config.method.classes_per_batch=8"]}


def start(workdir, data_dir, devices, *extra):
  env = dict(os.environ, TFDS_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
             PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "experiments", "pretrain.py"),
       f"--workdir={workdir}", *extra, *FLAGS], env=env, cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(processes):
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for p, output in zip(processes, outputs):
    # The head holds a native abort's message, the tail the traceback.
    assert p.returncode == 0, output[:3000] + "\n...\n" + output[-3000:]
  return outputs


def logged(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_log_the_losses_of_one(tmp_path, method):
  data_dir = tmp_path / "data"
  data.load("mnist5k", "test", batch_size=8, data_dir=str(data_dir))  # build
  address = f"127.0.0.1:{free_port()}"
  runs = {"2x2": tmp_path / "2x2", "1x4": tmp_path / "1x4"}
  flags = [f"--config=configs/{method}.py", *METHODS[method]]
  two = [start(runs["2x2"], data_dir, 2, f"--coordinator_address={address}",
               "--num_processes=2", f"--process_id={i}", *flags)
         for i in range(2)]
  outputs = finish(two)
  finish([start(runs["1x4"], data_dir, 4, *flags)])
  histories = {name: logged(path) for name, path in runs.items()}
  reference = histories["1x4"]
  assert [r["step"] for r in reference if "loss" in r] == [1, 2, 3, 4]
  for name, history in histories.items():
    for got, want in zip(history, reference):
      np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5,
                                 err_msg=f"{name} step {want['step']}")
    # The end-of-run evaluation is the same too.
    np.testing.assert_allclose(history[-1]["knn_top1"],
                               reference[-1]["knn_top1"], atol=1e-6)
  summary = [line for line in outputs[0].splitlines()
             if line.startswith(method)]
  assert summary, outputs[0][-3000:]
