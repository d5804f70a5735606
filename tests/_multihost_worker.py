"""One process of a (multi-process) toy training run, for the tests.

    python tests/_multihost_worker.py --workdir=W --devices=2 \
        [--coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I] \
        [--total_steps=6] [--step_sleep=0.0] [--npz=out.npz] \
        [--cluster --data_dir=D]

Each process has `--devices` CPU devices and feeds its slice of the same
global batches (`ArrayIterator`). After training, process 0 writes the final
state's parameters and the last loss to `--npz` (give it to every process:
restoring the final checkpoint is collective). `--step_sleep` slows every
step down (a hook), so a test can send SIGTERM in the middle of a run.
"""

import argparse
import faulthandler
import time

import jax


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--devices", type=int, default=2)
  parser.add_argument("--coordinator")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  parser.add_argument("--total_steps", type=int, default=6)
  parser.add_argument("--step_sleep", type=float, default=0.0)
  parser.add_argument("--npz")
  parser.add_argument("--cluster", action="store_true")
  parser.add_argument("--data_dir")
  args = parser.parse_args()
  # A hung collective would otherwise only show as the launcher's timeout;
  # this prints every thread's stack first (wait_all's timeout is 300 s).
  faulthandler.dump_traceback_later(240, exit=True)

  jax.config.update("jax_num_cpu_devices", args.devices)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Imported after the device count is set, before JAX starts its backend.
  import numpy as np
  import _multihost_toy as toy
  from ssljax import train
  from ssljax.train import distributed

  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  if args.cluster:
    method = toy.CLUSTER_TOY
    config = toy.cluster_config(args.data_dir, total_steps=args.total_steps)
    images, labels = toy.mnist5k_train(args.data_dir)
  else:
    method = toy.TOY
    config = toy.make_config(total_steps=args.total_steps)
    images, labels = toy.toy_images()
  data = toy.ArrayIterator(images, labels, global_batch=config.batch_size,
                           process_index=jax.process_index(),
                           process_count=jax.process_count())

  def slow(step, state):
    del step, state
    time.sleep(args.step_sleep)

  metrics = train.train(config, args.workdir, method=method, data=data,
                        hooks=[slow] if args.step_sleep else [])
  if args.npz:
    state = train.restore_state(config, args.workdir,
                                image_shape=images.shape[1:], method=method)
    if jax.process_index() == 0:
      saved = state.params if not args.cluster else \
          {"params": state.params, "method_state": state.method_state}
      leaves = jax.tree_util.tree_flatten_with_path(
          jax.device_get(saved))[0]
      np.savez(args.npz, loss=metrics["loss"], step=metrics["step"],
               **{jax.tree_util.keystr(path): leaf for path, leaf in leaves})
  print(f"process {jax.process_index()} done at step {metrics['step']}",
        flush=True)


if __name__ == "__main__":
  main()
