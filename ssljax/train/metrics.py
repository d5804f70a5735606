"""Reports a run's metrics: `metrics.jsonl`, TensorBoard, plots, progress.

The only module importing the TensorBoard writer (tensorboardX), matplotlib
and tqdm. Only one process reports (process 0 by default); on the others the
writer and the progress bar do nothing, so the loop calls them
unconditionally.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping, Optional, Sequence

import jax
import matplotlib
import tensorboardX
import tqdm

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "curves.png"
SUMMARY_FILE = "summary.json"

# Printed first in a summary line when present.
_HEADLINE = ("knn_top1", "linear_top1", "finetune_top1", "probe_top1",
             "loss")

# Panels of `plot_metrics`: a title and the metrics drawn in it.
_PANELS = (("loss", ("loss",)),
           ("accuracy", ("knn_top1", "knn1_top1", "probe_top1")))


def read_metrics(workdir: str) -> list[dict]:
  """The records of `<workdir>/metrics.jsonl`, in file order ([] if none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def write_summary(workdir: str, metrics: Mapping[str, float], *,
                  filename: str = SUMMARY_FILE) -> str:
  """Saves a run's final metrics as one JSON object; returns the path."""
  path = os.path.join(workdir, filename)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(dict(metrics), f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)
  return path


def read_summary(workdir: str, *, filename: str = SUMMARY_FILE
                 ) -> Optional[dict]:
  """What `write_summary` saved, or None if there is nothing.

  Example:
    >>> import tempfile
    >>> workdir = tempfile.mkdtemp()
    >>> print(read_summary(workdir))
    None
    >>> _ = write_summary(workdir, {"step": 3, "knn_top1": 0.5})
    >>> print(read_summary(workdir))
    {'knn_top1': 0.5, 'step': 3}
  """
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def summary_line(config, metrics: Mapping[str, float]) -> str:
  """One line: the run and its metrics, evaluation results first.

  Example:
    >>> import ml_collections
    >>> config = ml_collections.ConfigDict(dict(
    ...     method=dict(name="simclr"), dataset=dict(name="mnist5k")))
    >>> print(summary_line(config, {"step": 10, "loss": 1.23456, "lr": 0.1,
    ...                             "knn_top1": 0.9}))
    simclr on mnist5k, step 10: knn_top1=0.9 loss=1.235 lr=0.1
  """
  keys = [k for k in _HEADLINE if k in metrics]
  keys += sorted(k for k in metrics if k not in keys and k != "step")
  values = " ".join(f"{k}={metrics[k]:.4g}" for k in keys)
  return (f"{config.method.name} on {config.dataset.name}, "
          f"step {metrics['step']}: {values or 'already trained'}")


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


def _pyplot():
  """matplotlib's pyplot on the Agg backend, which draws to files without a
  display; chosen when first plotting, so importing this module does not
  change the backend of a caller's own plots."""
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  return pyplot


def plot_metrics(workdir: str, *, filename: str = PLOT_FILE) -> str:
  """Draws the loss and the accuracies of `metrics.jsonl` against the step.

  One PNG with two panels: the training loss, and the kNN and fast probe
  accuracies (points where they were evaluated). Metrics absent from the log
  are left out.

  Args:
    workdir: directory of the run.
    filename: the PNG's name in `workdir`.

  Returns:
    The path of the PNG.

  Example:
    >>> import os, tempfile
    >>> from ssljax.train.metrics import MetricsWriter, plot_metrics
    >>> workdir = tempfile.mkdtemp()
    >>> with MetricsWriter(workdir) as writer:
    ...   writer.write(1, {"loss": 2.5})
    ...   writer.write(2, {"loss": 2.0, "knn_top1": 0.8})
    >>> print(os.path.basename(plot_metrics(workdir)))
    curves.png
  """
  pyplot = _pyplot()
  records = read_metrics(workdir)
  figure, axes = pyplot.subplots(1, len(_PANELS), figsize=(10, 4))
  for ax, (title, names) in zip(axes, _PANELS):
    for name in names:
      points = [(r["step"], r[name]) for r in records
                if r.get(name) is not None]
      if points:
        ax.plot(*zip(*points), marker="." if name != "loss" else None,
                label=name)
    ax.set_title(title)
    ax.set_xlabel("step")
    if ax.has_data():
      ax.legend()
  figure.tight_layout()
  path = os.path.join(workdir, filename)
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
  return path


class ProgressBar:
  """A tqdm bar of the steps on stderr: rate, ETA and the last loss and
  images/s logged.

  stdout is left alone, so a command's last printed line stays its own.

  Args:
    total_steps: the run's length.
    start_step: where the run starts or resumes.
    active: whether this process shows it; default: it is process 0.
  """

  def __init__(self, total_steps: int, *, start_step: int = 0,
               active: Optional[bool] = None):
    active = jax.process_index() == 0 if active is None else active
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                          dynamic_ncols=True, disable=not active)

  def update(self, step: int, metrics: Optional[Mapping[str, float]] = None
             ) -> None:
    """Moves the bar to `step`; shows `metrics`' loss and images/s if given."""
    if metrics:
      shown = {"loss": "loss", "images_per_sec": "img/s"}
      self._bar.set_postfix({label: f"{metrics[k]:.4g}"
                             for k, label in shown.items() if k in metrics},
                            refresh=False)
    self._bar.update(step - self._bar.n)

  def close(self) -> None:
    self._bar.close()

  def __enter__(self) -> "ProgressBar":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def plot_bars(path: str, labels: Sequence[str],
              series: Mapping[str, Sequence[Optional[float]]], *,
              title: str = "") -> str:
  """A grouped bar chart PNG: one group per label, one bar per series.

  Missing values (None) leave a gap. Used for tables of runs (method against
  kNN and probe accuracy).

  Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "bars.png")
    >>> print(os.path.basename(plot_bars(
    ...     path, ["simclr", "byol"],
    ...     {"knn_top1": [0.9, 0.8], "probe_top1": [0.95, None]})))
    bars.png
  """
  pyplot = _pyplot()
  figure, ax = pyplot.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4))
  width = 0.8 / max(len(series), 1)
  for i, (name, values) in enumerate(series.items()):
    points = [(j + i * width, v) for j, v in enumerate(values)
              if v is not None]
    if points:
      ax.bar(*zip(*points), width=width, label=name)
  ax.set_xticks([j + width * (len(series) - 1) / 2
                 for j in range(len(labels))], labels, rotation=30)
  ax.set_title(title)
  ax.set_ylim(0, 1.15)  # Accuracies, with room for the legend above them.
  ax.legend(loc="upper center", ncols=len(series))
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
  return path
