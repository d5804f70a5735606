"""Throughput and memory of the masked-image-modelling train steps.

    python benchmarks/mim.py                          # all workloads
    python benchmarks/mim.py --methods=mae --workloads=mnist5k --steps=3
    python benchmarks/mim.py --no_torch               # ssljax only

For MAE, iBOT and I-JEPA, each on two workloads, with and without remat
(`backbone_kwargs.remat`: every block's activations recomputed in the
backward pass):

* mnist5k: the method's `configs/<m>.py:mnist5k` recipe (ViT-Tiny/4 on
  28×28×1 digits) with the full ViT-Tiny (12 blocks), batch 128;
* vits16: ViT-S/16 at 224×224×3, batch 32, the imagenet2012 recipe (iBOT:
  2 global + 10 local crops, 8192 outputs; MAE: the 512×8 decoder; I-JEPA:
  the 384×6 predictor), float32.

The step is the library's `ssljax.train.make_train_step` on a random uint8
batch (views and masks made inside the compiled step). Printed: images/s
(median of `--steps` timed steps after a warm-up), XLA's memory analysis of
the compiled step (temporaries, the activations remat trades away, and the
arguments: state and batch), its FLOPs (cost analysis), and, unless
`--no_torch`, the same workload in PyTorch eager (`torch_step`: the same
ViT, masking, heads, losses and AdamW, written here; views and masks drawn
once on the host and not timed) with the ratio of the two throughputs.
torch runs in this process before ssljax's two steps, each on every
core of the machine; on a shared machine, compare ratios of runs taken together.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from ssljax import methods, train

METHODS = ("mae", "ibot", "ijepa")
WORKLOADS = {
    "mnist5k": dict(preset="mnist5k", backbone="vit_tiny", patch=4,
                    image=(28, 28, 1), batch=128, depth=12),
    "vits16": dict(preset="imagenet2012", backbone="vit_small", patch=16,
                   image=(224, 224, 3), batch=32, depth=12),
}
MIB = 2 ** 20


def config_for(name: str, workload: dict, remat: bool):
  """`configs/<name>.py`'s recipe for the workload's preset, with its ViT,
  batch and remat, float32."""
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  config = module.get_config(workload["preset"]).unlock()
  config.batch_size = workload["batch"]
  config.compute_dtype = "float32"
  config.method.backbone = workload["backbone"]
  config.method.backbone_kwargs = {
      "patch_size": workload["patch"], "image_size": workload["image"][0],
      "depth": workload["depth"], "remat": remat}
  if "mask_group_size" in config.method:
    config.method.mask_group_size = None
  return train.fit_to_run(config)


def ssljax_step(name: str, workload: dict, remat: bool):
  """(run, compiled): `run()` performs one compiled step and waits."""
  config = config_for(name, workload, remat)
  method = methods.build(config)
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, frozen=method.frozen)
  shape = (workload["batch"], *workload["image"])
  images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  state = jax.jit(lambda: train.create_train_state(
      method, jax.random.key(0), jnp.zeros(shape, jnp.uint8), tx),
                  out_shardings=train.replicated(mesh))()
  batch = jax.device_put({"image": images}, train.data_sharded(mesh))
  step = train.make_train_step(config, method, tx, mesh)
  compiled = step.lower(state, batch).compile()
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready(metrics)

  return run, compiled


def median_seconds(run, steps: int) -> float:
  run()  # warm-up
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# ----------------------------------------------------------- the torch peer ---


def torch_step(name: str, workload: dict):
  """The same step in PyTorch eager: `run()` does one AdamW update."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  config = config_for(name, workload, False)
  m = config.method
  batch, (size, _, channels), p = (workload["batch"], workload["image"],
                                   workload["patch"])
  dim, heads = {"vit_tiny": (192, 3), "vit_small": (384, 6)}[
      workload["backbone"]]
  grid = size // p
  n = grid * grid

  def sincos(width, grid=grid):
    omega = 1.0 / 10000 ** (np.arange(width // 4) / (width / 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    enc = lambda q: np.concatenate(  # noqa: E731
        [np.sin(q.reshape(-1, 1) * omega), np.cos(q.reshape(-1, 1) * omega)],
        1)
    return torch.tensor(np.concatenate([enc(cols), enc(rows)], 1),
                        dtype=torch.float32)

  def blocks(width, depth, nheads):
    return nn.ModuleList([nn.TransformerEncoderLayer(
        width, nheads, 4 * width, dropout=0.0, activation="gelu",
        batch_first=True, norm_first=True, layer_norm_eps=1e-6)
                          for _ in range(depth)])

  class ViT(nn.Module):
    def __init__(self, cls_token, mask_token):
      super().__init__()
      self.embed = nn.Conv2d(channels, dim, p, p)
      self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
      self.mask = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
      self.pos = {}  # grid side -> embedding: local crops have their own
      self.blocks = blocks(dim, workload["depth"], heads)
      self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, keep=None, mask=None, pad=None):
      t = self.embed(x)
      side = t.shape[-1]
      t = t.flatten(2).transpose(1, 2)
      if mask is not None:
        t = torch.where(mask[..., None], self.mask.expand_as(t), t)
      if side not in self.pos:
        self.pos[side] = sincos(dim, side)
      t = t + self.pos[side]
      if keep is not None:
        t = torch.gather(t, 1, keep[..., None].expand(-1, -1, dim))
      if self.cls is not None:
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
      for block in self.blocks:
        t = block(t, src_key_padding_mask=pad)
      return self.norm(t)

  class Predictor(nn.Module):
    def __init__(self, width, depth, nheads, out):
      super().__init__()
      self.embed, self.proj = nn.Linear(dim, width), nn.Linear(width, out)
      self.mask = nn.Parameter(torch.zeros(1, 1, width))
      self.register_buffer("pos", sincos(width))
      self.blocks = blocks(width, depth, nheads)
      self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, context, ctx_index, tgt_index, cls):
      z = self.embed(context)
      z = torch.cat([z[:, :cls], z[:, cls:] + self.pos[ctx_index]], 1)
      t = torch.cat([z, self.mask + self.pos[tgt_index]], 1)
      for block in self.blocks:
        t = block(t)
      return self.proj(self.norm(t)[:, z.shape[1]:])

  def head(out_dim):
    return nn.Sequential(nn.Linear(dim, m.hidden_dim), nn.GELU(),
                         nn.Linear(m.hidden_dim, m.hidden_dim), nn.GELU(),
                         nn.Linear(m.hidden_dim, m.bottleneck_dim),
                         _Normalize(),
                         nn.Linear(m.bottleneck_dim, out_dim, bias=False))

  class _Normalize(nn.Module):
    def forward(self, x):
      return nn.functional.normalize(x, dim=-1)

  images = torch.randn(batch, channels, size, size)
  if name == "mae":
    encoder = ViT(True, False)
    decoder = Predictor(m.decoder_dim, m.decoder_depth, m.decoder_heads,
                        p * p * channels)
    modules = [encoder, decoder]
    keep_n = int(n * (1 - m.mask_ratio))

    def loss():
      order = torch.argsort(torch.rand(batch, n), 1)
      keep, masked = order[:, :keep_n], order[:, keep_n:]
      tokens = encoder(images, keep=keep)
      pred = decoder(tokens, keep, masked, 1)
      target = images.reshape(batch, channels, grid, p, grid, p).permute(
          0, 2, 4, 3, 5, 1).reshape(batch, n, -1)
      target = torch.gather(target, 1, masked[..., None].expand(
          -1, -1, target.shape[-1]))
      target = (target - target.mean(-1, keepdim=True)) / (
          target.var(-1, keepdim=True) + 1e-6).sqrt()
      return ((pred - target) ** 2).mean()
  elif name == "ibot":
    student, teacher = ViT(True, True), ViT(True, True)
    shead, thead = head(m.out_dim), head(m.out_dim)
    teacher.load_state_dict(student.state_dict())
    thead.load_state_dict(shead.state_dict())
    modules = [student, shead]
    n_local = m.augment.num_local if m.augment.preset == "multicrop" else 0
    local_size = 4 * (-(-3 * size // 28))
    crops = torch.randn(2 * batch, channels, size, size)
    local = torch.randn(n_local * batch, channels, local_size, local_size)
    center = torch.zeros(m.out_dim)

    def loss():
      mask = torch.rand(2 * batch, n) < 0.3
      with torch.no_grad():
        t = thead(teacher(crops)).softmax(-1)
      s = shead(student(crops, mask=mask))
      logp = (s / 0.1).log_softmax(-1)
      patch = -(t[:, 1:] * logp[:, 1:]).sum(-1)
      patch = (patch * mask).sum(-1) / mask.sum(-1).clamp(min=1)
      cls = [logp[:batch, 0], logp[batch:, 0]]
      if n_local:
        local_cls = shead(student(local)[:, 0])
        cls += list((local_cls / 0.1).log_softmax(-1).chunk(n_local))
      targets = ((t[:, 0] - center) / 0.07).softmax(-1).chunk(2)
      terms = [-(q * c).sum(-1).mean() for i, q in enumerate(targets)
               for j, c in enumerate(cls) if i != j]
      return sum(terms) / len(terms) + patch.mean()
  else:
    encoder, target_encoder = ViT(False, False), ViT(False, False)
    target_encoder.load_state_dict(encoder.state_dict())
    predictor = Predictor(m.predictor_dim, m.predictor_depth, heads, dim)
    modules = [encoder, predictor]
    # Typical sizes of the multi-block masks: a context of ~55% of the
    # patches, 4 targets of ~17%.
    context_n, target_n = int(0.55 * n), int(0.17 * n)

    def loss():
      order = torch.argsort(torch.rand(batch, n), 1)
      context = order[:, :context_n]
      targets = order[:, context_n:context_n + target_n].repeat(4, 1)
      with torch.no_grad():
        h = nn.functional.layer_norm(target_encoder(images), (dim,))
        h = torch.gather(h.repeat(4, 1, 1), 1,
                         targets[..., None].expand(-1, -1, dim))
      z = encoder(images, keep=context)
      pred = predictor(z.repeat(4, 1, 1), context.repeat(4, 1), targets, 0)
      return nn.functional.smooth_l1_loss(pred, h)

  parameters = [q for module in modules for q in module.parameters()]
  optimizer = torch.optim.AdamW(parameters, lr=1e-4)

  def run():
    optimizer.zero_grad()
    loss().backward()
    optimizer.step()

  return run


# --------------------------------------------------------------------- main ---


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--no_torch", action="store_true")
  args = parser.parse_args()
  print(f"devices: {jax.device_count()} × {jax.devices()[0].device_kind}; "
        f"timings on this machine as loaded now")
  print(f"{'method':<7}{'workload':<10}{'remat':<7}{'images/s':>10}"
        f"{'temp MiB':>10}{'args MiB':>10}{'GFLOP/step':>12}"
        f"{'torch im/s':>12}{'ssljax/torch':>14}")
  for workload_name in args.workloads.split(","):
    workload = WORKLOADS[workload_name]
    for name in args.methods.split(","):
      peer = None
      if not args.no_torch:
        seconds = median_seconds(torch_step(name, workload), args.steps)
        peer = workload["batch"] / seconds
      for remat in (False, True):
        run, compiled = ssljax_step(name, workload, remat)
        rate = workload["batch"] / median_seconds(run, args.steps)
        memory = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = cost.get("flops", math.nan) * jax.device_count()
        print(f"{name:<7}{workload_name:<10}{str(remat):<7}{rate:>10.1f}"
              f"{memory.temp_size_in_bytes / MIB:>10.0f}"
              f"{memory.argument_size_in_bytes / MIB:>10.0f}"
              f"{flops / 1e9:>12.1f}"
              + (f"{peer:>12.1f}{rate / peer:>14.2f}" if peer else ""),
              flush=True)


if __name__ == "__main__":
  main()
