"""Throughput of the augmentation presets beside a ResNet-18 step.

    python benchmarks/augment.py                     # 32² and 224², batch 8
    python benchmarks/augment.py --sizes=32 --batch=256 --presets=simclr,byol
    python benchmarks/augment.py --no_model               # augmentation only

For each preset and input side, `augment.views` runs jitted on a random
uint8 batch [B, S, S, 3], as inside the train step; "aug img/s" counts input
images per second (each yields all the preset's views). Beside it, the time
of a ResNet-18 forward+backward pass (BatchNorm in training mode; CIFAR stem
below 64 pixels, ImageNet stem above) over all the views the preset made:
the compute a train step adds to the augmentation. "aug share" is the
augmentation's fraction of the two: near 1, augmentation bounds the step.
Times are medians of `--repeats` calls after one compile.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssljax.data import augment


def median_seconds(fn, *args, repeats: int) -> float:
  """Median wall time of `fn(*args)` after a first (compiling) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def resnet18_step(views: tuple[jax.Array, ...], size: int):
  """A jitted ResNet-18 forward+backward over `views`, or None if missing."""
  try:
    # pylint: disable-next=import-outside-toplevel
    from ssljax.models import resnet18
  except ImportError as error:
    print(f"ResNet-18 reference column unavailable ({error}); "
          "rerun with --no_model to hide it.")
    return None
  model = resnet18(stem="cifar" if size < 64 else "imagenet")
  params, model_state = model.init(jax.random.key(0), views[0][:2])
  # Views of one side are batched together, as a method's encoder sees them.
  by_side: dict[int, list[jax.Array]] = {}
  for view in views:
    by_side.setdefault(view.shape[1], []).append(view)
  batches = tuple(jnp.concatenate(group) for group in by_side.values())

  def loss(params, batches):
    total = 0.0
    for batch in batches:
      features, _ = model.apply(params, model_state, batch, train=True)
      total = total + jnp.mean(features)
    return total

  grad = jax.jit(jax.grad(loss))
  return lambda: grad(params, batches)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default="simclr,byol,multicrop")
  parser.add_argument("--sizes", default="32,224")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--num_local", type=int, default=8,
                      help="local crops of the multicrop preset")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no_model", action="store_true",
                      help="skip the ResNet-18 reference column")
  args = parser.parse_args()

  print(f"devices: {jax.device_count()} × {jax.devices()[0].device_kind}, "
        f"batch {args.batch}, median of {args.repeats}")
  header = (f"{'preset':<10} {'side':>5} {'views':>5} {'aug ms':>9} "
            f"{'aug img/s':>10} {'resnet18 ms':>12} {'aug share':>10}")
  print(header)
  print("-" * len(header))
  rng = np.random.default_rng(0)
  for size in (int(s) for s in args.sizes.split(",")):
    images = jnp.asarray(rng.integers(0, 256, (args.batch, size, size, 3),
                                      dtype=np.uint8))
    for name in args.presets.split(","):
      overrides = {"num_local": args.num_local} if name == "multicrop" else {}
      make = jax.jit(lambda key, x, name=name, overrides=overrides:
                     augment.views(key, x, name, **overrides))
      key = jax.random.key(1)
      aug = median_seconds(make, key, images, repeats=args.repeats)
      views = make(key, images)
      model_ms, share = "-", "-"
      step = None if args.no_model else resnet18_step(views, size)
      if step is not None:
        compute = median_seconds(step, repeats=args.repeats)
        model_ms = f"{compute * 1e3:.1f}"
        share = f"{aug / (aug + compute):.2f}"
      print(f"{name:<10} {size:>5} {len(views):>5} {aug * 1e3:>9.1f} "
            f"{args.batch / aug:>10.0f} {model_ms:>12} {share:>10}",
            flush=True)


if __name__ == "__main__":
  main()
