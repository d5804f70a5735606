"""Checkpoints of a training run, with orbax (the only module importing it).

A checkpoint of step t in `<workdir>/checkpoints/<t>/` holds three items:

* `state`: the `TrainState` (every process writes its part, asynchronously);
* `data`: every process's data-iterator state as JSON, so that each process
  resumes reading exactly where it stopped;
* `meta`: the run's identity: a fingerprint of the config fields that shape
  the trajectory, those fields, the state's structure (path, shape, dtype of
  every leaf) and the process count.

Resuming checks `meta` against the current run before anything is read or
written: a workdir holding a checkpoint of a different run is refused with an
`IncompatibleCheckpointError` that names the workdir and every difference,
and its files are left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

PyTree = Any

CHECKPOINT_DIR = "checkpoints"

# Top-level config fields that may change when a run is resumed: they decide
# how often to log, save or evaluate, where data lives and how many devices
# share the (replicated) state, not the sequence of updates.
RESUMABLE_FIELDS = ("checkpoint_every", "log_every", "max_to_keep", "data_dir",
                    "mesh", "eval", "eval_every")

# At most this many state leaves are listed in a refusal message.
_MAX_LISTED = 8


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint that the current run must not resume."""


def config_fields(config) -> dict[str, Any]:
  """The config as {dotted key: JSON value}, minus `RESUMABLE_FIELDS`.

  Example:
    >>> import ml_collections
    >>> from ssljax.train import checkpoint
    >>> config = ml_collections.ConfigDict(dict(
    ...     seed=0, log_every=10, optimizer=dict(name="sgd", betas=(0.9, 1))))
    >>> print(checkpoint.config_fields(config))
    {'optimizer.betas': [0.9, 1], 'optimizer.name': 'sgd', 'seed': 0}
  """
  tree = json.loads(config.to_json_best_effort(sort_keys=True))
  for name in RESUMABLE_FIELDS:
    tree.pop(name, None)
  return _flatten(tree)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def fingerprint(config) -> str:
  """A short hash of `config_fields(config)`: equal configs, equal prints.

  Example:
    >>> import ml_collections
    >>> from ssljax.train import checkpoint
    >>> a = ml_collections.ConfigDict(dict(seed=0, log_every=10))
    >>> b = ml_collections.ConfigDict(dict(seed=0, log_every=99))
    >>> print(checkpoint.fingerprint(a) == checkpoint.fingerprint(b))
    True
  """
  text = json.dumps(config_fields(config), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def structure(state: PyTree) -> list[list]:
  """[path, shape, dtype] of every leaf of `state` (arrays or abstract).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.train import checkpoint
    >>> print(checkpoint.structure({"w": jnp.zeros((2, 3))}))
    [["['w']", [2, 3], 'float32']]
  """
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [[jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)]
          for path, leaf in leaves]


_IDENTITY_KEYS = frozenset(("fingerprint", "config", "structure",
                            "process_count"))


def _run_identity(config, state: PyTree) -> dict[str, Any]:
  return {"fingerprint": fingerprint(config), "config": config_fields(config),
          "structure": structure(state), "process_count": jax.process_count()}


def _differences(saved: dict, current: dict, *, data: bool) -> list[str]:
  """Human-readable differences between two `_run_identity` records; the
  process count matters only when the data iterators are restored."""
  problems = []
  if saved["fingerprint"] != current["fingerprint"]:
    keys = sorted(set(saved["config"]) | set(current["config"]))
    for key in keys:
      old = saved["config"].get(key, "<absent>")
      new = current["config"].get(key, "<absent>")
      if old != new:
        problems.append(f"config.{key}: {old!r} in the checkpoint, {new!r} now")
  old_leaves = {path: (shape, dtype) for path, shape, dtype in saved["structure"]}
  new_leaves = {path: (shape, dtype)
                for path, shape, dtype in current["structure"]}
  leaf_problems = [
      f"state{path}: {old_leaves.get(path, '<absent>')} in the checkpoint, "
      f"{new_leaves.get(path, '<absent>')} now"
      for path in sorted(set(old_leaves) | set(new_leaves))
      if old_leaves.get(path) != new_leaves.get(path)]
  problems += leaf_problems[:_MAX_LISTED]
  if len(leaf_problems) > _MAX_LISTED:
    problems.append(f"... and {len(leaf_problems) - _MAX_LISTED} more state "
                    f"leaves")
  if data and saved["process_count"] != current["process_count"]:
    problems.append(
        f"process count: {saved['process_count']} in the checkpoint, "
        f"{current['process_count']} now (each process resumes its own data "
        f"iterator)")
  return problems


def _gather_json(obj: Any) -> list:
  """Every process's JSON-serialisable `obj`, in process order.

  Multi-process, the JSON bytes travel as uint8 arrays through two small
  all-gathers (lengths, then padded bytes); every process must call this.
  """
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.int32(data.size))
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:data.size] = data
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:n])) for row, n in zip(rows, lengths)]


class Checkpointer:
  """Saves and restores a run's checkpoints in `<workdir>/checkpoints`.

  Saves are asynchronous: `save` returns once the arrays are copied off the
  devices, and the files are written in the background; `wait` blocks until
  they are committed. Only the newest `max_to_keep` checkpoints are kept.
  Every process of a multi-process run must make the same calls.

  Example:
    >>> import tempfile
    >>> import jax.numpy as jnp
    >>> import ml_collections
    >>> from ssljax.train import checkpoint
    >>> config = ml_collections.ConfigDict(dict(seed=0))
    >>> state = {"w": jnp.arange(3.0)}
    >>> with checkpoint.Checkpointer(tempfile.mkdtemp()) as ckpt:
    ...   ckpt.save(1, state, {"position": 1}, config)
    ...   ckpt.wait()
    ...   restored, data_state = ckpt.restore(config, state)
    >>> print(restored["w"].tolist(), data_state)
    [0.0, 1.0, 2.0] {'position': 1}
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=True,
            create=True))

  def latest_step(self) -> Optional[int]:
    """The newest committed checkpoint's step, None if there is none."""
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree, data_state: Any, config) -> None:
    """Starts saving `state` and this process's `data_state` as step `step`.

    Args:
      step: the number of updates `state` has seen.
      state: the train state (any pytree of arrays).
      data_state: this process's JSON-serialisable data-iterator state.
      config: the run's config (its fingerprint is saved with the state).
    """
    data_states = _gather_json(data_state)
    self._manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"processes": data_states}),
        meta=ocp.args.JsonSave(_run_identity(config, state))))

  def restore(self, config, abstract_state: PyTree,
              step: Optional[int] = None, *, data: bool = True
              ) -> Optional[tuple[PyTree, Any]]:
    """Restores a checkpoint of this run, or returns None if there is none.

    Args:
      config: the current run's config.
      abstract_state: the state's structure, e.g. from `jax.eval_shape`; the
        leaves' `sharding` (if set) places the restored arrays.
      step: the step to restore, the latest by default.
      data: whether to restore this process's data-iterator state too (to
        resume training, which needs the run's process count); without it
        any number of processes can load the state (to evaluate it).

    Returns:
      (state, data_state), data_state None unless `data`; or None when the
      workdir holds no checkpoint.

    Raises:
      IncompatibleCheckpointError: if the checkpoint belongs to a run with
        another config, state structure or (with `data`) process count; the
        message names the directory and the differences. Nothing is written.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    problems = _differences(self._saved_identity(step),
                            _run_identity(config, abstract_state), data=data)
    if problems:
      raise IncompatibleCheckpointError(
          f"Refusing to resume from {self.directory}: its checkpoint (step "
          f"{step}) belongs to a different run. Nothing was written. "
          f"Differences:\n  " + "\n  ".join(problems) +
          "\nUse another workdir, or delete this one to start over.")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data:
      items["data"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    if not data:
      return restored.state, None
    return restored.state, restored.data["processes"][jax.process_index()]

  def _saved_identity(self, step: int) -> dict:
    """Checkpoint `step`'s `meta` item; refuses a checkpoint without one."""
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore())).meta
      reason = f"its `meta` item lacks {sorted(_IDENTITY_KEYS - set(saved))}"
    except (FileNotFoundError, KeyError, ValueError) as e:
      saved, reason = {}, f"no readable `meta` item: {e}"
    if not _IDENTITY_KEYS <= set(saved):
      raise IncompatibleCheckpointError(
          f"Refusing to resume from {self.directory}: step {step} is not an "
          f"ssljax checkpoint ({reason}). Nothing was written; use another "
          f"workdir.")
    return saved

  def wait(self) -> None:
    """Blocks until every started save is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
