"""Forward+backward time, memory and FLOP/s of every loss over a batch sweep.

    python benchmarks/losses.py                      # all losses, small sweep
    python benchmarks/losses.py --losses=nt_xent,clip --batches=1024,8192
    python benchmarks/losses.py --target             # nt_xent N=65,536, D=128, blockwise

Time is the median of `--repeats` jitted `value_and_grad` calls after one
compile. Memory is XLA's own accounting of the compiled computation
(arguments + outputs + temporaries), which is what bounds the batch size; the
process' peak RSS is printed at the end. Achieved FLOP/s = XLA cost-analysis
FLOPs / measured time (XLA does not count a scan's body once per iteration,
so for the blockwise path we print the analytic matmul FLOPs instead).
Losses with in-batch negatives run twice, dense and blockwise.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import losses

GIB = 2.0**30
BLOCKWISE = ("nt_xent", "clip", "supcon", "info_nce")
# Exported helpers that are not losses of a batch of embeddings.
COMPANIONS = ("center_loss_update", "pcl_concentration", "swapped_prediction")


def _normal(key, *shape):
  return jax.random.normal(key, shape, jnp.float32)


def make_inputs(name, n, d, key):
  """(differentiable args, static kwargs, analytic fwd+bwd matmul FLOPs)."""
  k = jax.random.split(key, 4)
  labels = jax.random.randint(k[3], (n,), 0, max(2, n // 8))
  classes = 100
  in_batch = 2 * n * n * d  # one [n, n] similarity matmul
  table = {
      "nt_xent": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, 4 * 4 * in_batch),
      "clip": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, 2 * 4 * in_batch),
      "supcon": ((_normal(k[0], n, 2, d),), {"labels": labels}, 4 * 4 * in_batch),
      "info_nce": ((_normal(k[0], n, d), _normal(k[1], n, d), _normal(k[2], n, d)),
                   {}, 4 * in_batch),
      "moco": ((_normal(k[0], n, d), _normal(k[1], n, d), _normal(k[2], 4096, d)),
               {}, None),
      "nnclr": ((_normal(k[0], n, d), _normal(k[1], n, d), _normal(k[2], 4096, d)),
                {}, None),
      "bilinear_info_nce": ((_normal(k[0], n, d), _normal(k[1], n, d),
                             _normal(k[2], d, d)), {}, None),
      "contrastive_pair": ((_normal(k[0], n, d), _normal(k[1], n, d)),
                           {"same": labels % 2}, None),
      "triplet": ((_normal(k[0], n, d), _normal(k[1], n, d), _normal(k[2], n, d)),
                  {}, None),
      "batch_triplet": ((_normal(k[0], n, d),), {"labels": labels}, None),
      "n_pair": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, None),
      "lifted_structured": ((_normal(k[0], n, d),), {"labels": labels}, None),
      "soft_nearest_neighbour": ((_normal(k[0], n, d),), {"labels": labels}, None),
      "center_loss": ((_normal(k[0], n, d), _normal(k[1], classes, d)),
                      {"labels": labels % classes}, None),
      "sphereface": ((_normal(k[0], n, d), _normal(k[1], d, classes)),
                     {"labels": labels % classes}, None),
      "cosface": ((_normal(k[0], n, d), _normal(k[1], d, classes)),
                  {"labels": labels % classes}, None),
      "arcface": ((_normal(k[0], n, d), _normal(k[1], d, classes)),
                  {"labels": labels % classes}, None),
      "byol": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, None),
      "simsiam": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, None),
      "barlow_twins": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, None),
      "vicreg": ((_normal(k[0], n, d), _normal(k[1], n, d)), {}, None),
      "dino": ((_normal(k[0], 4, n, d), _normal(k[1], 2, n, d)),
               {"center": jnp.zeros((d,))}, None),
      "swav": ((jnp.tanh(_normal(k[0], 2, n, d)),), {}, None),
      "proto_nce": ((_normal(k[0], n, d), _normal(k[1], classes, d)),
                    {"labels": labels % classes,
                     "concentration": jnp.full((classes,), 0.1)}, None),
  }
  return table[name]


def call(name, args, kwargs):
  """Positional/keyword layout of each loss, per the DESIGN.md contract."""
  fn = getattr(losses, name)
  if name == "center_loss":
    features, centers = args
    return fn(features, kwargs["labels"], centers)
  if name in ("sphereface", "cosface", "arcface"):
    embeddings, weights = args
    return fn(embeddings, kwargs["labels"], weights)
  if name == "proto_nce":
    query, prototypes = args
    return fn(query, prototypes, kwargs["labels"], kwargs["concentration"])
  if name == "contrastive_pair":
    return fn(*args, kwargs["same"])
  if name in ("supcon", "batch_triplet", "lifted_structured",
              "soft_nearest_neighbour"):
    return fn(*args, kwargs["labels"], **kwargs.get("options", {}))
  if name == "dino":
    return fn(*args, kwargs["center"])
  return fn(*args, **kwargs.get("options", {}))


def measure(name, n, d, implementation, repeats):
  args, kwargs, analytic_flops = make_inputs(name, n, d, jax.random.key(0))
  if implementation is not None:
    kwargs = {**kwargs, "options": {"implementation": implementation}}
  argnums = tuple(range(len(args)))
  step = jax.jit(jax.value_and_grad(lambda *a: call(name, a, kwargs), argnums))
  compiled = step.lower(*args).compile()
  mem = compiled.memory_analysis()
  mem_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes
               + mem.temp_size_in_bytes) if mem is not None else float("nan")
  cost = compiled.cost_analysis() or {}
  flops = analytic_flops if implementation == "blockwise" else cost.get("flops")
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    value, _ = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  if not np.isfinite(float(value)):
    raise RuntimeError(f"{name} at N={n} gave a non-finite loss {value}")
  gflops = (flops or float("nan")) / seconds / 1e9
  print(f"{name:24s} {implementation or '-':9s} N={n:<7d} D={d:<4d} "
        f"{seconds * 1e3:10.2f} ms  {mem_bytes / GIB:8.3f} GiB  "
        f"{gflops:8.1f} GFLOP/s")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--losses", default=",".join(
      n for n in losses.__all__ if n not in COMPANIONS))
  parser.add_argument("--batches", default="256,1024,4096")
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--target", action="store_true",
                      help="nt_xent, N=65,536, D=128, blockwise, one repeat")
  flags = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"x{jax.device_count()}")
  if flags.target:
    measure("nt_xent", 65536, 128, "blockwise", repeats=1)
  else:
    for name in flags.losses.split(","):
      for n in (int(b) for b in flags.batches.split(",")):
        impls = ("dense", "blockwise") if name in BLOCKWISE else (None,)
        for impl in impls:
          measure(name, n, flags.dim, impl, flags.repeats)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
  print(f"peak process RSS {peak:.2f} GiB")


if __name__ == "__main__":
  main()
