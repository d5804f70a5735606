"""`train(config, workdir)`: the pre-training loop of a method.

Runs on one CPU, one accelerator or many hosts alike. Each process loads its
slice of the global batch; the slices become one global array sharded over
the ("data",) mesh and the jitted step updates the replicated state.

The workdir holds `checkpoints/` (every process writes its part), and, from
process 0 only, `config.json`, `metrics.jsonl` and TensorBoard events.

Starting again with the same workdir resumes from the latest checkpoint, and
the resumed run is identical (parameters and logged metrics) to one that was
never interrupted: the step's randomness is a function of (seed, step), and
the data iterators restart from their saved states.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from ssljax import data as data_lib
from ssljax import methods
from ssljax.train import dataset_update, evaluation
from ssljax.train.checkpoint import Checkpointer
from ssljax.train.metrics import MetricsWriter, ProgressBar
from ssljax.train.optim import make_optimizer
from ssljax.train.preemption import watch_preemption
from ssljax.train.sharding import (check_batch_size, data_sharded, make_mesh,
                                   replicated)
from ssljax.train.state import TrainState, create_train_state
from ssljax.train.step import make_train_step

CONFIG_FILE = "config.json"

# A hook sees the state after each update and may return metrics to log at
# that step (an evaluation every n steps, say); it runs on every process.
Hook = Callable[[int, TrainState], Optional[Mapping[str, float]]]

# Metrics that must be finite for the state after the step to be usable.
_FINITE = ("loss", "grad_norm")


def train(config, workdir: str, *, method=None, data: Optional[Iterator] = None,
          hooks: Sequence[Hook] = ()) -> dict[str, float]:
  """Pre-trains `config.method` for `config.total_steps` steps in `workdir`.

  Each step's metrics are logged every `config.log_every` steps, at every
  checkpoint and at the end; a checkpoint is saved every
  `config.checkpoint_every` steps and at the end (asynchronously, the newest
  `config.max_to_keep` kept, default 3). SIGTERM makes the loop save at the
  end of the current step and return. A non-finite loss or gradient norm
  stops training with a `FloatingPointError` naming the step; that state is
  never saved, so the newest checkpoint is the last good one.
  `images_per_sec` is measured between logged steps, leaving out the hooks'
  time, so its first value includes compilation. Process 0 shows a progress
  bar on stderr. Settings counted in epochs that do not fit a shortened run
  shrink with it first (`fit_to_run`).

  Args:
    config: experiment config (see `configs/common.py`): `method` (with its
      `name`), `dataset.name`, `batch_size` (global), `total_steps`, `seed`,
      `mesh`, `optimizer`, `checkpoint_every`, `log_every`; optionally
      `max_to_keep`, `data_dir`, `dataset.path` and `dataset.image_size`.
    workdir: directory of the run (created if missing).
    method: the `Method` to train; default `ssljax.methods.build(config)`.
    data: endless iterator of this process's batch slices, dicts with
      "image" (uint8 [B / process_count, H, W, C]) or "crops", and "label",
      with JSON-serialisable `get_state()` / `set_state(state)`; default:
      the train split of `config.dataset` from `ssljax.data.load`, shuffled,
      repeated (for variable-size datasets, the method's crops cut on the
      host).
    hooks: callables `hook(step, state)` run after every update on every
      process; a returned dict is logged at that step. They must not keep
      `state`, whose buffers the next step reuses.

  Returns:
    The last logged metrics ("step", "loss", "learning_rate", "grad_norm",
    "images_per_sec", the method's and the hooks' metrics); only "step" if
    the workdir's run was already complete.

  Raises:
    IncompatibleCheckpointError: if `workdir` holds a checkpoint of another
      run (nothing is written).
    FloatingPointError: on a non-finite loss or gradient norm.

  Example (SimCLR with a tiny CNN, two steps on 16 synthetic images):
    >>> import tempfile
    >>> import ml_collections, numpy as np
    >>> from ssljax import data, train
    >>> config = ml_collections.ConfigDict(dict(
    ...     method=dict(name="simclr", backbone="tiny_cnn",
    ...                 proj_hidden_dim=16, proj_dim=8,
    ...                 augment={"preset": "none"}),  # compiles fast
    ...     dataset=dict(name="synthetic"), batch_size=8, total_steps=2,
    ...     seed=0, mesh=dict(data=-1), checkpoint_every=2, log_every=1,
    ...     optimizer=dict(name="lars", learning_rate=0.3, weight_decay=1e-6)))
    >>> records = [{"image": np.full((8, 8, 3), 16 * i, np.uint8), "label": i}
    ...            for i in range(16)]
    >>> workdir = tempfile.mkdtemp()
    >>> metrics = train.train(config, workdir,
    ...                       data=data.pipeline(records, batch_size=8))
    >>> print(metrics["step"], np.isfinite(metrics["loss"]))
    2 True
    >>> print([r["step"] for r in train.read_metrics(workdir)])
    [1, 2]
  """
  config = fit_to_run(config)
  method = methods.build(config) if method is None else method
  mesh = make_mesh(config)
  check_batch_size(config.batch_size, mesh)
  if data is None:
    data = load_train(config, method)
  # Global batches, placed on the devices ahead of the step that needs them.
  batches = data_lib.DevicePrefetch(data, data_sharded(mesh))
  tx = make_optimizer(config, frozen=method.frozen)

  # The first batch gives the shapes; the iterator is then rewound.
  first_data_state = batches.get_state()
  first = next(batches)
  dataset_update.check_indexed(method, first)
  init = _initializer(config, method, tx, mesh, _image_shapes(first))

  with Checkpointer(workdir, max_to_keep=config.get("max_to_keep", 3)) as ckpt:
    restored = ckpt.restore(config, jax.eval_shape(init))
    state, data_state = (init(), first_data_state) if restored is None \
        else restored
    batches.set_state(data_state)
    start = int(jax.device_get(state.step))
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
      logging.info("train: %s from step %d in %s", method.name, start, workdir)
    step_fn = make_train_step(config, method, tx, mesh)
    dataset_pass = None if method.dataset_update is None else \
        dataset_update.make_dataset_update(config, method, mesh)
    with MetricsWriter(workdir, start_step=start) as writer, \
        ProgressBar(config.total_steps, start_step=start) as progress, \
        watch_preemption() as preempted:
      return _loop(config, state, start, batches, step_fn, hooks, ckpt,
                   writer, progress, preempted, dataset_pass)


def load_train(config, method) -> Iterator:
  """This process's endless, shuffled train batches of `config.dataset`;
  variable-size images come as the method's crops, cut on the host."""
  options = evaluation.dataset_options(config)
  info = data_lib.info(config.dataset.name, path=options["path"],
                       image_size=options["image_size"])
  crops = None
  if info.variable_size and method.crops is not None:
    crops = method.crops(info.image_shape[0]) or None
  return data_lib.load(
      config.dataset.name, "train", batch_size=config.batch_size,
      seed=config.seed, shuffle=True, num_epochs=None,
      process_index=jax.process_index(), process_count=jax.process_count(),
      classes_per_batch=config.method.get("classes_per_batch") or None,
      crops=crops, **options)


def fit_to_run(config):
  """`config` with its epoch-counted settings shrunk to fit the run.

  The configs record which settings they count in epochs
  (`config.epoch_settings`: warm-up, frozen layers, teacher warm-up, queue
  start... as dotted keys) and the run they were planned for
  (`total_epochs` × steps per epoch). When `config.total_steps` is set
  shorter, a setting longer than the run is scaled by the same factor as the
  run, T / planned, so that it keeps its share of it (at least 1 step if it
  was at least 1); one log line lists the changes. Configs without
  `epoch_settings` come back as they are.

  Example:
    >>> import ml_collections
    >>> config = ml_collections.ConfigDict(dict(
    ...     total_steps=5, total_epochs=10.0, batch_size=10,
    ...     dataset=dict(train_size=310), epoch_settings=("optimizer.warmup",),
    ...     optimizer=dict(warmup=62)))  # 2 of 10 epochs of 31 steps
    >>> print(fit_to_run(config).optimizer.warmup)  # 2 of 10 of 5 steps
    1
  """
  keys = config.get("epoch_settings") or ()
  if not keys:
    return config
  planned = config.get("total_epochs", 0) * (
      config.dataset.train_size // config.batch_size)
  total = config.total_steps
  changes = {}
  for key in keys:
    value = _get(config, key)
    if value > total:
      scaled = int(round(value * min(1.0, total / max(planned, 1))))
      changes[key] = max(min(scaled, total), 1 if value >= 1 else 0)
  if not changes:
    return config
  fitted = ml_collections.ConfigDict(config.to_dict())
  for key, value in changes.items():
    *parents, leaf = key.split(".")
    node = fitted
    for part in parents:
      node = node[part]
    node[leaf] = value
  logging.warning("train: total_steps=%d is shorter than these settings "
                  "counted in epochs; shrunk with the run: %s", total,
                  ", ".join(f"{k} {_get(config, k)} -> {v}"
                            for k, v in changes.items()))
  if config.is_locked:
    fitted.lock()
  return fitted


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def restore_state(config, workdir: str, *, image_shape: Sequence[int],
                  method=None, step: Optional[int] = None) -> TrainState:
  """Loads a `TrainState` saved by `train` (for evaluation or inspection).

  Args:
    config: the run's config (e.g. read back from `<workdir>/config.json`).
    workdir: the run's directory.
    image_shape: (height, width, channels) of the images the method was
      initialised on (`ssljax.data.info(...).image_shape`).
    method: the run's `Method`; default `ssljax.methods.build(config)`.
    step: the checkpoint to load; default the latest. Step 0 is the state
      before the first update, which is never saved: the run's
      initialisation, rebuilt from its config and seed (the "from scratch"
      baseline of the evaluation protocols).

  Returns:
    The state, replicated over `make_mesh(config)` (any number of processes
    and devices, not necessarily those of the run).

  Raises:
    FileNotFoundError: if `workdir` holds no checkpoint.
    IncompatibleCheckpointError: if its checkpoint belongs to another config.
  """
  config = fit_to_run(config)
  method = methods.build(config) if method is None else method
  mesh = make_mesh(config)
  tx = make_optimizer(config, frozen=method.frozen)
  init = _initializer(config, method, tx, mesh,
                      {"image": (config.batch_size, *tuple(image_shape))})
  if step == 0:
    return init()
  with Checkpointer(workdir) as ckpt:
    restored = ckpt.restore(config, jax.eval_shape(init), step=step,
                            data=False)
  if restored is None:
    raise FileNotFoundError(f"restore_state: no checkpoint in {workdir}.")
  return restored[0]


def _image_shapes(batch: Mapping) -> dict:
  """The global shapes of a batch's "image" or "crops"."""
  if "image" in batch:
    return {"image": batch["image"].shape}
  return {"crops": tuple(c.shape for c in batch["crops"])}


def _initializer(config, method, tx, mesh, shapes: Mapping) -> Callable:
  """A jitted `() -> TrainState` at step 0, replicated over `mesh`.

  Built from constants only (the seed, zero images shaped like `shapes`),
  so every process creates the same state without exchanging arrays.
  """
  def zeros(shape):
    return jnp.zeros(shape, jnp.uint8)

  def batch():
    if "image" in shapes:
      return {"image": zeros(shapes["image"])}
    return {"crops": tuple(zeros(s) for s in shapes["crops"])}

  return jax.jit(
      lambda: create_train_state(method, jax.random.key(config.seed), batch(),
                                 tx),
      out_shardings=replicated(mesh))


def _loop(config, state, start, batches, step_fn, hooks, ckpt, writer,
          progress, preempted, dataset_pass) -> dict[str, float]:
  step = last_step = start
  metrics = {}
  last_time = time.perf_counter()
  # The finiteness of step t's metrics is checked after step t+1 has been
  # dispatched, so the host never waits for the device in between; steps that
  # save or log are checked before anything is written.
  unchecked = None
  while step < config.total_steps:
    extra = {}
    if dataset_pass is not None and step % dataset_pass.every == 0:
      # An async save still in flight synchronises the processes from its
      # own thread; the pass's many collectives must not interleave with it.
      ckpt.wait()
      pass_start = time.perf_counter()
      # Logged with the first step that trains on its result.
      state, extra = dataset_pass.run(state)
      last_time += time.perf_counter() - pass_start
    state, step_metrics = step_fn(state, next(batches))
    step += 1
    if unchecked is not None:
      _host_metrics(*unchecked, ckpt)
    unchecked = (step, step_metrics)
    hooks_start = time.perf_counter()
    for hook in hooks:
      extra.update(hook(step, state) or {})
    # Evaluations are not training: their time stays out of images_per_sec.
    last_time += time.perf_counter() - hooks_start
    stop = preempted(step)
    save = stop or step == config.total_steps or \
        step % config.checkpoint_every == 0
    if save or extra or step % config.log_every == 0:
      now = time.perf_counter()
      metrics = {**_host_metrics(step, step_metrics, ckpt), **extra,
                 "images_per_sec": (step - last_step) * config.batch_size /
                                   (now - last_time)}
      unchecked, last_step, last_time = None, step, now
      writer.write(step, metrics)
      progress.update(step, metrics)
      if jax.process_index() == 0:
        logging.info("step %d: %s", step, ", ".join(
            f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    else:
      progress.update(step)
    if save:
      ckpt.save(step, state, batches.get_state(), config)
    if stop:
      ckpt.wait()
      logging.warning("train: SIGTERM received; saved step %d in %s, exiting.",
                      step, ckpt.directory)
      break
  return {"step": step, **metrics}


def _host_metrics(step: int, metrics: Mapping, ckpt: Checkpointer
                  ) -> dict[str, float]:
  """Fetches a step's metrics; raises if its loss or gradient is not finite."""
  host = {k: float(v) for k, v in jax.device_get(metrics).items()}
  bad = {k: host[k] for k in _FINITE if not math.isfinite(host[k])}
  if bad:
    ckpt.wait()
    raise FloatingPointError(
        f"train: non-finite {bad} at step {step}; training stopped and this "
        f"state was not saved. The last good checkpoint in {ckpt.directory} "
        f"is step {ckpt.latest_step()}.")
  return host

