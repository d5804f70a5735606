"""Trains every registered method with one budget and tabulates the results.

    python experiments/table.py --dataset=mnist5k --quick   # ~30 min on a CPU
    python experiments/table.py --dataset=cifar10 --methods=simclr,byol

Each method runs with its own `configs/<method>.py` recipe for the dataset
preset, all with the same number of epochs (`--epochs`; default the preset's,
10 with `--quick`), in `<workdir>/<method>`. Re-running resumes unfinished
runs and reuses the saved rows of finished ones. The frozen encoders are
scored as in `pretrain.py` (weighted kNN top-1, fast probe top-1: the
monitor, not the standard linear evaluation of `linear_eval.py`).
Written to `<workdir>`:

  table.md    method | kNN top-1 | probe top-1 | images/s | wall time (s)
  table.png   the two accuracies of every method as bars

The first row, "raw pixels", scores the flattened images themselves with the
same kNN and fast probe: the baseline every encoder must beat (skipped for
datasets too large to hold as floats, see `PIXEL_BASELINE_MAX_FLOATS`).

A method whose run fails gets its error in the table instead of numbers; the
others still run. images/s is the median of the logged training throughput;
the wall time is training and evaluation by the invocation that finished
the run (a resumed run counts only what was left).
"""

import importlib
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
from absl import app, flags, logging

from experiments import _cli
from ssljax import data, methods
from ssljax.train import evaluation
from ssljax.train import metrics as metrics_lib

QUICK_EPOCHS = 10.0
# Train + test pixels held as float32 for the raw-pixel row: CIFAR's 60,000 x
# 3,072 fit, ImageNet's do not.
PIXEL_BASELINE_MAX_FLOATS = 2 * 10**8
PIXELS = "raw pixels"

_DATASET = flags.DEFINE_string("dataset", "mnist5k",
                               "Dataset preset of the configs.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory of the runs; default runs/table_<dataset>.")
_EPOCHS = flags.DEFINE_float(
    "epochs", None, "Training epochs of every method; default the preset's "
    f"({QUICK_EPOCHS:g} with --quick).")
_QUICK = flags.DEFINE_bool("quick", False,
                           f"Train {QUICK_EPOCHS:g} epochs per method.")
_METHODS = flags.DEFINE_list("methods", None,
                             "Methods to run; default all registered ones.")
_OVERRIDES = flags.DEFINE_string(
    "overrides", "", "More config overrides for every method, "
    "`key=value,...` as in the configs' argument (configs/common.py).")

_COLUMNS = ("method", "kNN top-1", "probe top-1", "images/s",
            "wall time (s)")


def method_config(name: str, dataset: str, epochs=None, overrides: str = ""):
  """`configs/<name>.py`'s config for `dataset`, with `epochs` if given,
  then `overrides` ("key=value,...")."""
  arg = dataset if epochs is None else f"{dataset},total_epochs={epochs}"
  arg = f"{arg},{overrides}" if overrides else arg
  return importlib.import_module(f"configs.{name}").get_config(arg)


ROW_FILE = "table_row.json"


def run_method(name: str, dataset: str, workdir: str, epochs=None,
               overrides: str = "") -> dict:
  """Trains and scores one method; a failure is returned as `error`.

  A finished run's row is saved in `<workdir>/table_row.json` and read back
  on the next invocation, so a table re-run to add methods keeps the others'
  wall times.
  """
  row_path = os.path.join(workdir, ROW_FILE)
  if os.path.exists(row_path):
    with open(row_path, encoding="utf-8") as f:
      return json.load(f)
  start = time.perf_counter()
  try:
    config = method_config(name, dataset, epochs, overrides)
    final = _cli.pretrain(config, workdir)
  except Exception as error:  # pylint: disable=broad-except
    # One broken method must not cost the table the others' numbers.
    logging.error("table: %s failed:\n%s", name, traceback.format_exc())
    return {"method": name, "error": f"{type(error).__name__}: {error}"}
  throughput = [r["images_per_sec"] for r in metrics_lib.read_metrics(workdir)
                if r.get("images_per_sec") is not None]
  row = {"method": name, "knn_top1": final.get("knn_top1"),
         "probe_top1": final.get("probe_top1"),
         "images_per_sec": statistics.median(throughput) if throughput
                           else None,
         "wall_s": time.perf_counter() - start}
  if final["step"] == config.total_steps and jax.process_index() == 0:
    with open(row_path, "w", encoding="utf-8") as f:
      json.dump(row, f)
  return row


def pixel_baseline(dataset: str) -> dict | None:
  """The "raw pixels" row: the flattened images, in [0, 1], scored as
  encoders are (`ssljax.train.evaluation.score`); None if too large."""
  meta = data.info(dataset)
  if (meta.num_train + meta.num_test) * np.prod(meta.image_shape) > \
      PIXEL_BASELINE_MAX_FLOATS:
    logging.info("table: no raw-pixel row for %s (too large)", dataset)
    return None
  start = time.perf_counter()

  def split(name, size):
    (batch,) = data.load(dataset, name, batch_size=size, shuffle=False,
                         num_epochs=1, drop_remainder=False,
                         process_index=0, process_count=1)
    pixels = batch["image"].reshape(size, -1).astype(np.float32) / 255.0
    return pixels, batch["label"]

  features = evaluation.Features(*split("train", meta.num_train),
                                 *split("test", meta.num_test))
  scores = evaluation.score(features, num_classes=meta.num_classes,
                            linear=True)
  return {"method": PIXELS, "knn_top1": scores["knn_top1"],
          "probe_top1": scores["probe_top1"], "images_per_sec": None,
          "wall_s": time.perf_counter() - start}


def markdown(rows) -> str:
  """The rows of `run_method` as a markdown table.

  Example:
    >>> print(markdown([{"method": "simclr", "knn_top1": 0.91234,
    ...                  "probe_top1": 0.95, "images_per_sec": 812.3,
    ...                  "wall_s": 150.2},
    ...                 {"method": "dino", "error": "ValueError: x"}]))
    | method | kNN top-1 | probe top-1 | images/s | wall time (s) |
    |---|---|---|---|---|
    | simclr | 91.23 | 95.00 | 812 | 150 |
    | dino | failed: ValueError: x | - | - | - |
  """
  lines = ["| " + " | ".join(_COLUMNS) + " |",
           "|" + "---|" * len(_COLUMNS)]
  for row in rows:
    if "error" in row:
      cells = [row["method"], f"failed: {row['error']}", "-", "-", "-"]
    else:
      cells = [row["method"], _percent(row["knn_top1"]),
               _percent(row["probe_top1"]), _number(row["images_per_sec"]),
               _number(row["wall_s"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _percent(value) -> str:
  return "n/a" if value is None else f"{100 * value:.2f}"


def _number(value) -> str:
  return "n/a" if value is None else f"{value:.0f}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _cli.start()
  dataset = _DATASET.value
  workdir = _WORKDIR.value or os.path.join("runs", f"table_{dataset}")
  epochs = _EPOCHS.value
  if epochs is None and _QUICK.value:
    epochs = QUICK_EPOCHS
  names = _METHODS.value or methods.names()
  baseline = pixel_baseline(dataset)
  rows = [] if baseline is None else [baseline]
  for name in names:
    logging.info("table: training %s on %s", name, dataset)
    rows.append(run_method(name, dataset, os.path.join(workdir, name),
                           epochs, _OVERRIDES.value))
  if jax.process_index() != 0:
    return
  table = markdown(rows)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  metrics_lib.plot_bars(
      os.path.join(workdir, "table.png"), [r["method"] for r in rows],
      {key: [r.get(key) for r in rows] for key in ("knn_top1", "probe_top1")},
      title=f"{dataset}: top-1 of the frozen encoders")
  print(table)
  trained = [r for r in rows if r["method"] != PIXELS]
  ok = sum("error" not in r for r in trained)
  print(f"table: {ok} of {len(trained)} methods trained on {dataset}; "
        f"{os.path.join(workdir, 'table.md')}", flush=True)


if __name__ == "__main__":
  app.run(main)
