"""ssljax against PyTorch eager on the CPU: the same method, model and batch.

    python benchmarks/vs_torch.py                      # both SimCLR workloads
    python benchmarks/vs_torch.py --workloads=mnist5k --steps=5
    python benchmarks/vs_torch.py --conv               # one 3×3 convolution
    python benchmarks/vs_torch.py --resnet             # ResNet-18 fwd, fwd+bwd

Workloads (float32 on both sides, SimCLR with its recipe's projector,
NT-Xent and optimizer):

* cifar: ResNet-18 with the CIFAR stem on 32×32×3, batch 256, LARS
  (`configs/simclr.py:cifar10`, whose bfloat16 compute is set to float32);
* mnist5k: `small_cnn` (conv3×3-BN-ReLU 16, 32, 64, 128 with strides 1, 2, 2,
  2, the 4×4 map flattened) on 28×28×1, batch 128, AdamW
  (`configs/simclr.py:mnist5k`).

The ssljax side is the library's own train step (`ssljax_simclr_step`): views
made on the device inside the compiled step, forward and backward, the
optimizer. The PyTorch side is torchvision's `resnet18` with the CIFAR stem
(3×3 stride-1 first convolution, no max-pool, no fc) or the same small CNN,
SimCLR's head and NT-Xent written here, LARS written here (or
`torch.optim.AdamW`), in `channels_last`, with the same views made on the host
with torchvision's transforms, one image at a time, timed with the step
(their share is printed). Each side runs in its own process pinned to the
same `--threads` cores (XLA sizes its thread pool from the affinity; torch
gets `torch.set_num_threads`); the parent alternates single steps of the two
so that a shared machine's load drifts over both alike, and reports medians.
FLOPs per step are XLA's cost analysis of the ssljax step; the achieved
FLOP/s of both sides divide that count by their step time. Peak memory is
each process's peak resident set (`ru_maxrss`), frameworks included.

`--conv` times the 3×3 64→64 convolution on [256, 32, 32, 64]: forward,
forward + input gradient, forward + weight gradient, with XLA's
`lax.conv_general_dilated` and its autodiff, `ssljax.models.conv2d`, and
torch. `--resnet` times ResNet-18 (CIFAR stem, 512×32×32) forward and
forward + backward with XLA's convolution, with `conv2d`, and torch.

Needs the `bench` extra (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import statistics
import sys
import time
from typing import Callable
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKLOADS = {
    "cifar": dict(preset="cifar10", batch=256, image=(32, 32, 3)),
    "mnist5k": dict(preset="mnist5k", batch=128, image=(28, 28, 1)),
}


def _pin(threads: int) -> None:
  """Keeps this process on `threads` cores, before jax or torch starts."""
  cores = sorted(os.sched_getaffinity(0))[:threads]
  os.sched_setaffinity(0, cores)


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], None]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _cpu_seconds() -> float:
  """User + system time of this process, all threads."""
  times = os.times()
  return times.user + times.system


# ---------------------------------------------------------------- ssljax ---


def simclr_config(preset: str, batch: int):
  """`configs/simclr.py`'s recipe for `preset`, float32, batch `batch`."""
  from configs import simclr  # pylint: disable=import-outside-toplevel
  config = simclr.get_config(preset).unlock()
  config.batch_size = batch
  config.compute_dtype = "float32"
  return config


def ssljax_simclr_step(preset: str, batch: int, image_shape):
  """ssljax's SimCLR train step on a random uint8 batch, compiled.

  The one place this benchmark touches the methods/train API.

  Returns:
    (run, flops): `run()` performs one step and waits for it; `flops` is
    XLA's count for one step.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from ssljax import methods, train  # pylint: disable=import-outside-toplevel

  config = train.fit_to_run(simclr_config(preset, batch))
  method = methods.build(config)
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, frozen=method.frozen)
  shape = (batch, *image_shape)
  state = jax.jit(
      lambda: train.create_train_state(
          method, jax.random.key(0), {"image": jnp.zeros(shape, jnp.uint8)},
          tx),
      out_shardings=train.replicated(mesh))()
  images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  data = jax.device_put({"image": images, "label": np.zeros(batch, np.int32)},
                        train.data_sharded(mesh))
  compiled = train.make_train_step(config, method, tx, mesh).lower(
      state, data).compile()

  def run():
    nonlocal state
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)

  return run, compiled.cost_analysis()["flops"] * mesh.size


# ----------------------------------------------------------------- torch ---


def _torch_backbone(preset: str, config):
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  nn = torch.nn
  if preset == "cifar10":
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    return net, 512
  kwargs = config.method.backbone_kwargs
  layers, channels = [], 1
  for width, stride in zip(kwargs.widths, kwargs.strides):
    layers += [nn.Conv2d(channels, width, 3, stride, 1, bias=False),
               nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    channels = width
  if kwargs.get("pooling", "avg") == "flatten":
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), channels * 4 * 4
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  return nn.Sequential(*layers), channels


def _torch_head(in_dim: int, hidden: int, out: int, layers: int,
                last_bn: bool):
  """SimCLR's head as `ssljax.methods.simclr` builds it: (Linear-BN-ReLU) ×
  (L − 1), then Linear-BN with a learnable scale and no offset (`last_bn`,
  the official head) or a Linear with bias (solo-learn's, the recipes')."""
  import torch  # pylint: disable=import-outside-toplevel
  nn = torch.nn
  dims = [in_dim] + [hidden] * (layers - 1) + [out]
  blocks = []
  for i in range(layers - 1):
    blocks += [nn.Linear(dims[i], dims[i + 1], bias=False),
               nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
  blocks.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))
  if last_bn:
    blocks.append(nn.BatchNorm1d(dims[-1]))
    blocks[-1].bias.requires_grad_(False)
  return nn.Sequential(*blocks)


def _nt_xent(z, temperature: float):
  """NT-Xent over the 2N projections z = [z1; z2] (mean over anchors)."""
  import torch  # pylint: disable=import-outside-toplevel
  z = torch.nn.functional.normalize(z, dim=1)
  n = z.shape[0] // 2
  logits = z @ z.T / temperature
  logits.fill_diagonal_(float("-inf"))
  target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
  return torch.nn.functional.cross_entropy(logits, target)


def _lars(params, *, lr: float, momentum: float, weight_decay: float,
          eta: float = 1e-3):
  """LARS as `ssljax.train.make_optimizer` (no decay, trust 1 on 1-d)."""
  import torch  # pylint: disable=import-outside-toplevel
  velocity = [torch.zeros_like(p) for p in params]

  @torch.no_grad()
  def step():
    for p, v in zip(params, velocity):
      g = p.grad
      if p.ndim > 1:
        g = g + weight_decay * p
        w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
        trust = torch.where((w_norm > 0) & (g_norm > 0),
                            eta * w_norm / g_norm, torch.ones_like(w_norm))
        g = g * trust
      v.mul_(momentum).add_(g, alpha=lr)
      p.sub_(v)

  return step


def _torch_views(config, image_shape):
  """The recipe's two views, torchvision transforms on one uint8 image."""
  from torchvision.transforms import v2  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from ssljax.data import augment  # pylint: disable=import-outside-toplevel
  fields = {k: v for k, v in config.method.augment.items()
            if k not in ("preset", "mean", "std") and v is not None}
  specs = augment.preset(config.method.augment.preset,
                         image_size=image_shape[0], **fields)
  colour = image_shape[2] == 3
  transforms = []
  for spec in specs:
    ops = [v2.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio,
                                antialias=True),
           v2.RandomHorizontalFlip(spec.flip_prob),
           v2.RandomApply([v2.ColorJitter(
               spec.brightness, spec.contrast,
               spec.saturation if colour else 0, spec.hue if colour else 0)],
               p=spec.jitter_prob)]
    if colour:
      ops.append(v2.RandomGrayscale(spec.grayscale_prob))
    if spec.blur_prob:
      taps = 2 * augment.blur_radius(spec.size) + 1
      ops.append(v2.RandomApply([v2.GaussianBlur(taps, spec.blur_sigma)],
                                p=spec.blur_prob))
    if spec.solarize_prob:
      ops.append(v2.RandomSolarize(128, p=spec.solarize_prob))
    ops += [v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(config.method.augment.mean,
                         config.method.augment.std)]
    transforms.append(v2.Compose(ops))

  def views(images):
    return [torch.stack([t(x) for x in images]).contiguous(
        memory_format=torch.channels_last) for t in transforms]

  return views


def torch_simclr_step(preset: str, batch: int, image_shape):
  """The same SimCLR step in PyTorch eager (see the module docstring).

  Returns:
    (run, view_seconds): `run()` performs one step; `view_seconds()` the
    time its last call spent making views.
  """
  import torch  # pylint: disable=import-outside-toplevel
  config = simclr_config(preset, batch)
  backbone, features = _torch_backbone(preset, config)
  head = _torch_head(features, config.method.proj_hidden_dim,
                     config.method.proj_dim, config.method.proj_layers,
                     config.method.proj_last_bn)
  model = torch.nn.Sequential(backbone, head).to(
      memory_format=torch.channels_last).train()
  params = [p for p in model.parameters() if p.requires_grad]
  opt = config.optimizer
  lr = opt.learning_rate * batch / 256
  if opt.name == "lars":
    update = _lars(params, lr=lr, momentum=opt.momentum,
                   weight_decay=opt.weight_decay)
  else:
    adamw = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim > 1],
          "weight_decay": opt.weight_decay},
         {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
        lr=lr, betas=(opt.momentum, 0.999))
    update = adamw.step
  views = _torch_views(config, image_shape)
  images = torch.randint(0, 256, (batch, image_shape[2], *image_shape[:2]),
                         dtype=torch.uint8)
  scale = 2.0 if config.method.sum_views else 1.0
  last = {"views": 0.0}

  def run():
    start = time.perf_counter()
    x1, x2 = views(images)
    last["views"] = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    # BatchNorm statistics as the recipe's `view_batchnorm`.
    if config.method.view_batchnorm == "per_view":
      z = torch.cat([model(x1), model(x2)])
    else:
      z = model(torch.cat([x1, x2]))
    loss = scale * _nt_xent(z, config.method.temperature)
    loss.backward()
    update()

  return run, lambda: last["views"]


# ---------------------------------------------------------- worker pairs ---


def _worker(side: str, workload: str, threads: int, xla_flags: str,
            conn) -> None:
  """Builds one side's step, then runs a step per "step" message."""
  _pin(threads)
  spec = WORKLOADS[workload]
  if side == "ssljax":
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in (os.environ.get("XLA_FLAGS", ""), xla_flags) if f)
    run, flops = ssljax_simclr_step(spec["preset"], spec["batch"],
                                    spec["image"])
    extra = lambda: 0.0  # noqa: E731  (views are inside the step)
  else:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    run, extra = torch_simclr_step(spec["preset"], spec["batch"],
                                   spec["image"])
    flops = None
  run()  # Warm-up (and compilation of any lazy path).
  conn.send(flops)
  while conn.recv() == "step":
    cpu = _cpu_seconds()
    seconds = _timed(run)
    conn.send((seconds, _cpu_seconds() - cpu, extra(), _peak_mib()))
  conn.close()


def simclr_side_by_side(workload: str, *, steps: int, threads: int,
                        xla_flags: str) -> None:
  """Alternates single steps of the two sides; prints medians and ratios."""
  ctx = multiprocessing.get_context("spawn")
  sides = {}
  for side in ("ssljax", "torch"):
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker,
                       args=(side, workload, threads, xla_flags, child))
    proc.start()
    sides[side] = (proc, parent)
  flops = sides["ssljax"][1].recv()
  sides["torch"][1].recv()
  results = {side: [] for side in sides}
  for _ in range(steps):
    for side, (_, conn) in sides.items():
      conn.send("step")
      results[side].append(conn.recv())
  for proc, conn in sides.values():
    conn.send("stop")
    proc.join()
  batch = WORKLOADS[workload]["batch"]
  print(f"\n{workload}: SimCLR, batch {batch}, {threads} threads, "
        f"{flops / 1e9:.1f} GFLOP per step (XLA), median of {steps} steps")
  rates = {}
  for side, rows in results.items():
    seconds, cpu, views = (statistics.median(r[i] for r in rows)
                           for i in range(3))
    rates[side] = batch / seconds
    view_note = f"  (views {views:.2f} s)" if views else ""
    print(f"  {side:7s} {seconds:7.2f} s/step {rates[side]:8.1f} images/s "
          f"{flops / seconds / 1e9:7.1f} GFLOP/s  cpu {cpu:6.2f} s/step  "
          f"peak {rows[-1][3]:7.0f} MiB{view_note}")
  print(f"  ssljax / torch throughput: {rates['ssljax'] / rates['torch']:.2f}x"
        f"  (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores)")


# ----------------------------------------------------- conv and resnet ---


def _best(fn: Callable[[], None], repeats: int) -> float:
  fn()
  return min(_timed(fn) for _ in range(repeats))


def _xla_conv_models():
  """Patches the models' convolution back to XLA's (the code before)."""
  from jax import lax  # pylint: disable=import-outside-toplevel
  from ssljax.models import conv  # pylint: disable=import-outside-toplevel

  def xla(x, kernel, strides, dilation, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    lhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

  return mock.patch.object(conv, "_conv", xla)


def conv_micro(threads: int, repeats: int) -> None:
  """One 3×3 64→64 convolution on [256, 32, 32, 64]."""
  _pin(threads)
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel
  from ssljax.models import conv2d  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(threads)
  x = jax.random.normal(jax.random.key(0), (256, 32, 32, 64))
  w = jax.random.normal(jax.random.key(1), (3, 3, 64, 64)) * 0.05
  impls = {
      "xla": lambda x, w: lax.conv_general_dilated(
          x, w, (1, 1), ((1, 1), (1, 1)),
          dimension_numbers=("NHWC", "HWIO", "NHWC")),
      "ssljax": lambda x, w: conv2d(x, w, padding=1)}
  print(f"\n3×3 conv 64→64 on [256, 32, 32, 64], {threads} threads, best of "
        f"{repeats} (ms)")
  print(f"  {'':8s} {'forward':>9s} {'+ dx':>9s} {'+ dW':>9s}")
  for name, f in impls.items():
    runs = [jax.jit(f),
            jax.jit(jax.grad(lambda x, w: f(x, w).sum(), 0)),
            jax.jit(jax.grad(lambda x, w: f(x, w).sum(), 1))]
    ms = [_best(lambda r=r: jax.block_until_ready(r(x, w)), repeats) * 1e3
          for r in runs]
    print(f"  {name:8s} " + " ".join(f"{t:9.0f}" for t in ms))
  tx = torch.randn(256, 64, 32, 32).contiguous(
      memory_format=torch.channels_last)
  conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(
      memory_format=torch.channels_last)

  def backward(input_grad: bool):
    tx.requires_grad_(input_grad)
    conv.weight.requires_grad_(not input_grad)
    conv(tx).sum().backward()

  with torch.no_grad():
    forward = _best(lambda: conv(tx), repeats)
  ms = [forward] + [_best(lambda g=g: backward(g), repeats)
                    for g in (True, False)]
  print(f"  {'torch':8s} " + " ".join(f"{t * 1e3:9.0f}" for t in ms))


def resnet_fwd_bwd(threads: int, repeats: int, batch: int) -> None:
  """ResNet-18 (CIFAR stem) forward and forward + backward, train mode."""
  _pin(threads)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  from ssljax import models  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(threads)
  x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
  print(f"\nResNet-18 CIFAR stem, {batch}×32×32, {threads} threads, best of "
        f"{repeats} (s)")
  for name in ("xla", "ssljax"):
    model = models.resnet18(stem="cifar")
    params, state = jax.jit(model.init)(jax.random.key(1), x)

    def loss(p, s, x, model=model):
      out, s = model.apply(p, s, x, train=True)
      return jnp.sum(out ** 2), s

    with _xla_conv_models() if name == "xla" else contextlib.nullcontext():
      fwd = jax.jit(lambda p, s, x, model=model: model.apply(p, s, x,
                                                             train=True))
      grad = jax.jit(jax.grad(loss, has_aux=True))
      times = [_best(lambda f=f: jax.block_until_ready(f(params, state, x)),
                     repeats) for f in (fwd, grad)]
    print(f"  {name:8s} forward {times[0]:6.2f}  forward+backward "
          f"{times[1]:6.2f}")
  net = torchvision.models.resnet18()
  net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
  net.maxpool, net.fc = torch.nn.Identity(), torch.nn.Identity()
  net = net.to(memory_format=torch.channels_last).train()
  tx = torch.randn(batch, 3, 32, 32).contiguous(
      memory_format=torch.channels_last)

  def both():
    net.zero_grad(set_to_none=True)
    (net(tx) ** 2).sum().backward()

  with torch.no_grad():
    forward = _best(lambda: net(tx), repeats)
  print(f"  {'torch':8s} forward {forward:6.2f}  forward+backward "
        f"{_best(both, repeats):6.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workloads", default="cifar,mnist5k",
                      help=f"comma-separated, of {sorted(WORKLOADS)}")
  parser.add_argument("--steps", type=int, default=5,
                      help="timed steps per side (after one warm-up)")
  parser.add_argument("--threads", type=int,
                      default=len(os.sched_getaffinity(0)),
                      help="cores for each side (default: all usable)")
  parser.add_argument("--xla_flags", default="",
                      help="appended to XLA_FLAGS on the ssljax side")
  parser.add_argument("--conv", action="store_true",
                      help="the single-convolution micro benchmark instead")
  parser.add_argument("--resnet", action="store_true",
                      help="ResNet-18 forward / backward instead")
  parser.add_argument("--batch", type=int, default=512,
                      help="--resnet batch")
  args = parser.parse_args()
  if args.conv:
    conv_micro(args.threads, args.steps)
  elif args.resnet:
    resnet_fwd_bwd(args.threads, args.steps, args.batch)
  else:
    for workload in args.workloads.split(","):
      if workload not in WORKLOADS:
        parser.error(f"unknown workload {workload!r}; one of "
                     f"{sorted(WORKLOADS)}")
      simclr_side_by_side(workload, steps=args.steps, threads=args.threads,
                          xla_flags=args.xla_flags)


if __name__ == "__main__":
  main()
