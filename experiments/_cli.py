"""What the experiment command lines share: multi-host flags, start-up, runs.

Imported by `pretrain.py`, `linear_eval.py` and `table.py`, which put the
repository root on `sys.path` first (the config files import `configs`).
"""

import json
import logging as python_logging
import os

import jax
import ml_collections
from absl import flags, logging

from configs import common
from ssljax import train
from ssljax.evaluate import protocols
from ssljax.train import distributed, evaluation, metrics as metrics_lib
from ssljax.train.loop import CONFIG_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0, for multi-process runs outside TPU/Slurm/MPI.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (with --coordinator_address).")


def _quiet_orbax(record) -> bool:
  """Drops orbax's per-save INFO records from the log; keeps warnings."""
  return (record.levelno >= python_logging.WARNING
          or "orbax" not in record.pathname)


def start() -> None:
  """Filters orbax's chatter and joins the other processes, if any."""
  logging.get_absl_logger().addFilter(_quiet_orbax)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  logging.info("process %d of %d, %d devices", jax.process_index(),
               jax.process_count(), jax.device_count())


def pretrain(config, workdir: str) -> dict[str, float]:
  """Trains with evaluation in `workdir`; returns the final metrics.

  An image folder's facts (classes, size, statistics) are read first
  (`configs.common.resolve_dataset`). On process 0, a finished run also
  writes `summary.json` and `curves.png`. A workdir whose run was already
  finished returns its `summary.json`.
  """
  common.resolve_dataset(config)
  final = train.train(config, workdir,
                      hooks=[evaluation.evaluation_hook(config)])
  if final["step"] < config.total_steps:  # Stopped by SIGTERM.
    return final
  if len(final) == 1:  # Nothing left to train.
    return metrics_lib.read_summary(workdir) or final
  if jax.process_index() == 0:
    metrics_lib.write_summary(workdir, final)
    metrics_lib.plot_metrics(workdir)
  return final


def finetune(workdir: str, step=None, overrides=None
             ) -> tuple[ml_collections.ConfigDict, dict[str, float] | None]:
  """(config, metrics) of fine-tuning `workdir`'s checkpoint at `step`
  (latest; 0 the initialisation) by `protocols.finetune_protocol` with
  `overrides`; metrics None if SIGTERM stopped it. Process 0 writes them
  to `<workdir>/<protocols.directory(...)>.json`."""
  config = read_config(workdir)
  state = train.restore_state(
      config, workdir, step=step,
      image_shape=evaluation.dataset_info(config).image_shape)
  named_step = step is not None
  protocol, result = protocols.run("finetune", config, state, workdir,
                                   overrides=overrides, named_step=named_step)
  if len(result) == 1:  # Stopped by SIGTERM: no score yet.
    return config, None
  result["step"] = protocol.pretrained.step
  if jax.process_index() == 0:
    metrics_lib.write_summary(
        workdir, result,
        filename=protocols.directory(protocol, named_step) + ".json")
  return config, result


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config `train` saved in `<workdir>/config.json`.

  JSON has no tuples; the configs' sequences (crop scales, normalisation
  statistics) are tuples, which the methods hash, so arrays come back as
  tuples.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a run's workdir?")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f, object_hook=_tuples))


def _tuples(obj: dict) -> dict:
  return {k: _as_tuple(v) for k, v in obj.items()}


def _as_tuple(value):
  return tuple(map(_as_tuple, value)) if isinstance(value, list) else value
