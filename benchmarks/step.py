"""Throughput and achieved FLOP/s of every method's full train step.

    python benchmarks/step.py                     # all methods (minutes on a CPU)
    python benchmarks/step.py --methods=simclr,byol --batch=32 --steps=3

The step is `ssljax.train.make_train_step`: views made on device, forward and
backward through the backbone and heads, the optimizer and the method's
post-update, jitted over all local devices. Each method runs its
`configs/<method>.py` recipe with the backbone and batch size fixed here:

* on a CPU, ResNet-18 with the CIFAR stem on 32×32 images in float32, batch
  256 (the CIFAR recipes); the reference is this machine's measured dense
  float32 matmul rate;
* on a GPU or TPU, ResNet-50 at 224×224 with bfloat16 compute (float32
  parameters), batch 256; the fraction of peak is the MFU against the chip's
  dense bfloat16 peak (`--peak_tflops`, or the table below), and the
  measured bfloat16 matmul rate is printed beside it.

FLOPs per step are XLA's cost analysis of the compiled step (the per-device
program, times the number of devices); achieved FLOP/s = FLOPs per step /
measured step time, the median of `--steps` timed steps after one warm-up.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# configs/ is imported as a package by the config files.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from ssljax import methods, train

# Dense bfloat16 peak (TFLOP/s, without sparsity) by `device_kind`.
PEAK_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100": 989.0,
    "NVIDIA H200": 989.0, "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
    "TPU v5p": 459.0,
}

CPU_SETUP = dict(preset="cifar10", backbone="resnet18",
                 backbone_kwargs={"stem": "cifar"}, image_size=32,
                 compute_dtype="float32")
ACCELERATOR_SETUP = dict(preset="imagenet2012", backbone="resnet50",
                         backbone_kwargs={}, image_size=224,
                         compute_dtype="bfloat16")


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_flops_per_sec(n: int, dtype, repeats: int = 5) -> float:
  """Measured rate of an n×n @ n×n matmul (2n³ FLOPs) on the default device."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  return 2 * n**3 / median_seconds(
      lambda: matmul(a, b).block_until_ready(), repeats)


def experiment_config(name: str, setup: dict, batch: int):
  """`configs/<name>.py`'s recipe with this benchmark's backbone and batch."""
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(setup["preset"]).unlock()
  config.batch_size = batch
  config.compute_dtype = setup["compute_dtype"]
  config.method.backbone = setup["backbone"]
  config.method.backbone_kwargs = setup["backbone_kwargs"]
  return config


def benchmark(name: str, setup: dict, *, batch: int, steps: int) -> dict:
  """Compiles `name`'s step, times it; FLOPs, seconds and images per step."""
  config = train.fit_to_run(experiment_config(name, setup, batch))
  method = methods.build(config)
  mesh = train.make_mesh(config)
  train.check_batch_size(batch, mesh)
  tx = train.make_optimizer(config, frozen=method.frozen)
  shape = (batch, setup["image_size"], setup["image_size"],
           len(config.dataset.mean))
  state = jax.jit(
      lambda: train.create_train_state(
          method, jax.random.key(0), {"image": jnp.zeros(shape, jnp.uint8)},
          tx),
      out_shardings=train.replicated(mesh))()
  rng = np.random.default_rng(0)
  batch_data = jax.device_put(
      {"image": rng.integers(0, 256, shape, dtype=np.uint8),
       "label": rng.integers(0, config.dataset.num_classes, batch,
                             dtype=np.int32)},
      train.data_sharded(mesh))
  start = time.perf_counter()
  compiled = train.make_train_step(config, method, tx, mesh).lower(
      state, batch_data).compile()
  compile_seconds = time.perf_counter() - start
  flops = compiled.cost_analysis()["flops"] * mesh.size

  def one_step():
    nonlocal state
    state, metrics = compiled(state, batch_data)
    jax.block_until_ready(metrics)

  one_step()  # warm-up
  seconds = median_seconds(one_step, steps)
  return dict(flops=flops, seconds=seconds, images=batch,
              compile_seconds=compile_seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--methods", default=",".join(methods.names()),
                      help="comma-separated method names")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--steps", type=int, default=5,
                      help="timed steps per method (after one warm-up)")
  parser.add_argument("--matmul_size", type=int, default=None,
                      help="n of the reference n×n matmul (default 2048 on "
                           "a CPU, 8192 on an accelerator)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="accelerator's dense bf16 peak for the MFU")
  args = parser.parse_args()

  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  setup = CPU_SETUP if on_cpu else ACCELERATOR_SETUP
  dtype = jnp.dtype(setup["compute_dtype"])
  n = args.matmul_size or (2048 if on_cpu else 8192)
  matmul_rate = matmul_flops_per_sec(n, dtype) * jax.device_count()
  if on_cpu:
    peak, peak_name = matmul_rate, "measured f32 matmul peak"
  else:
    tflops = args.peak_tflops or PEAK_BF16_TFLOPS.get(device.device_kind)
    if tflops is None:
      sys.exit(f"Unknown peak for {device.device_kind!r}; pass --peak_tflops.")
    peak, peak_name = tflops * 1e12 * jax.device_count(), "MFU"
  print(f"{jax.device_count()} x {device.device_kind}; {setup['backbone']} "
        f"{setup['image_size']}x{setup['image_size']} {setup['compute_dtype']}"
        f", batch {args.batch}; {dtype.name} {n}x{n} matmul: "
        f"{matmul_rate / 1e9:.1f} GFLOP/s")
  print(f"{'method':<14}{'images/s':>10}{'step ms':>10}{'GFLOP/step':>12}"
        f"{'GFLOP/s':>10}{peak_name:>26}{'compile s':>11}")
  for name in args.methods.split(","):
    r = benchmark(name, setup, batch=args.batch, steps=args.steps)
    rate = r["flops"] / r["seconds"]
    print(f"{name:<14}{r['images'] / r['seconds']:>10.1f}"
          f"{1e3 * r['seconds']:>10.1f}{r['flops'] / 1e9:>12.2f}"
          f"{rate / 1e9:>10.1f}{rate / peak:>26.1%}"
          f"{r['compile_seconds']:>11.1f}", flush=True)


if __name__ == "__main__":
  main()
