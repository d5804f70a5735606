"""Writes a run's metrics: `metrics.jsonl` and TensorBoard event files.

The only module importing the TensorBoard writer (tensorboardX). Only one
process writes (process 0 by default); on the others the writer does nothing,
so the loop calls it unconditionally.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping, Optional

import jax
import tensorboardX

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str) -> list[dict]:
  """The records of `<workdir>/metrics.jsonl`, in file order ([] if none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
  """Appends one JSON object per logged step and the same scalars to TensorBoard.

  A resumed run restarts at its checkpoint's step, so records written after
  that step by the interrupted run are dropped on opening (from
  `metrics.jsonl`; TensorBoard is told to purge them), and the log reads as
  one uninterrupted run.

  Args:
    workdir: directory of the run.
    start_step: the step the run starts or resumes from.
    active: whether this process writes; default: it is process 0.

  Example:
    >>> import tempfile
    >>> from ssljax.train.metrics import MetricsWriter, read_metrics
    >>> workdir = tempfile.mkdtemp()
    >>> with MetricsWriter(workdir) as writer:
    ...   writer.write(1, {"loss": 2.5})
    ...   writer.write(2, {"loss": 2.0})
    >>> with MetricsWriter(workdir, start_step=1) as writer:
    ...   writer.write(2, {"loss": 1.5})
    >>> print(read_metrics(workdir))
    [{'step': 1, 'loss': 2.5}, {'step': 2, 'loss': 1.5}]
  """

  def __init__(self, workdir: str, *, start_step: int = 0,
               active: Optional[bool] = None):
    self._active = jax.process_index() == 0 if active is None else active
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    kept = [r for r in read_metrics(workdir) if r["step"] <= start_step]
    # Replaced in one step, so that a crash here cannot lose the kept log.
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(json.dumps(record) + "\n" for record in kept)
    os.replace(path + ".tmp", path)
    self._jsonl = open(path, "a", encoding="utf-8")
    self._tensorboard = tensorboardX.SummaryWriter(
        workdir, purge_step=start_step + 1 if start_step else None)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    """Records `metrics` (scalars) at `step`; non-finite values become null."""
    if not self._active:
      return
    values = {k: float(v) for k, v in metrics.items()}
    record = {"step": int(step)}
    record.update({k: v if math.isfinite(v) else None
                   for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tensorboard.close()

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
