"""Trains every registered method with one budget and tabulates the results.

    python experiments/table.py --dataset=mnist5k --quick   # ~40 min, 2 CPU cores
    python experiments/table.py --dataset=mnist5k --epochs=10 --seeds=3  # README
    python experiments/table.py --dataset=cifar10 --methods=simclr,byol

Each method runs with its own `configs/<method>.py` recipe for the dataset
preset, all with the same number of epochs (`--epochs`; default the preset's,
5 with `--quick`, which also skips the runs' mid-run kNN monitors: a smoke
table, below the README's ten-epoch one), once per seed 0 .. `--seeds` − 1
(the seed sets the initialisation, the views and the data order), in
`<workdir>/<method>/seed<k>`. Re-running resumes unfinished runs and reuses
the saved rows of finished ones; `--reuse=table.json` takes the rows of a
saved table (of the same dataset, epochs, overrides and fine-tuning epochs)
instead of training those runs, to add methods or seeds to it. The frozen
encoders are scored as in `pretrain.py`: weighted kNN and the fast probe (a
monitor, not the standard linear evaluation of `linear_eval.py`), on all
the training labels and on the fixed 10% and 1% subsets
(`ssljax.train.evaluation.few_label_scores`: the semi-supervised setting,
where pixels are weak). With
`--finetune_epochs=E` each run is also fine-tuned end to end for E epochs by
`finetune.py`'s recipe, and so is the same network from its initialisation
(`finetune.py --step=0`), in the run's `finetune/` and `finetune_step0/`:
the columns "fine-tune" and "from scratch". Written to `<workdir>`:

  table.md    where it came from (command, commit, CPU, JAX, seeds, time),
              then method | kNN | probe | kNN 10% | probe 10% | kNN 1% |
              probe 1% [| fine-tune | from scratch] | images/s | wall time
              (s) | beats pixels on
  table.json  the same, with every seed's row
  table.png   the kNN and probe accuracies of every method as bars

Cells are the mean ± the standard deviation over seeds (sample, n − 1),
in percent. The first row, "raw pixels", scores the flattened images
themselves the same way (its probe depends on the seed, its kNN does not);
it is skipped for datasets too large to hold as floats
(`PIXEL_BASELINE_MAX_FLOATS`). A method beats the pixels on a column when
its mean minus its standard deviation exceeds the pixels' mean plus theirs:
the last column lists those columns, so a claim holds beyond the spread
(with one seed there is no spread and the column compares means only).
Fine-tuning has no pixel row: its reference is the same network trained
from the raw pixels, the "from scratch" column, by the same rule.

A method whose run fails gets its error in the table instead of numbers; the
others still run. images/s is the median of the logged training throughput;
the wall time is training and evaluation by the invocation that finished
the run (a resumed run counts only what was left), summed over seeds.
"""

import importlib
import json
import os
import platform
import statistics
import subprocess
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

QUICK_EPOCHS = 5.0
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
_QUICK = flags.DEFINE_bool(
    "quick", False, f"Train {QUICK_EPOCHS:g} epochs per method and score "
    "the encoders only at the end.")
_METHODS = flags.DEFINE_list("methods", None,
                             "Methods to run; default all registered ones.")
_OVERRIDES = flags.DEFINE_string(
    "overrides", "", "More config overrides for every method, "
    "`key=value,...` as in the configs' argument (configs/common.py).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Runs per method, seeds 0..N-1.")
_FINETUNE_EPOCHS = flags.DEFINE_integer(
    "finetune_epochs", None, "Also fine-tune every run for this many epochs "
    "(finetune.py's recipe), and the same network from its initialisation.")
_REUSE = flags.DEFINE_string(
    "reuse", None, "A table.json of the same dataset, epochs, overrides and "
    "fine-tuning epochs whose finished rows are taken instead of training "
    "those runs again (to add methods or seeds to a saved table).")

# (metric, column title) of the accuracy columns.
ACCURACIES = (("knn_top1", "kNN"), ("probe_top1", "probe"),
              ("knn_top1_10pct", "kNN 10%"), ("probe_top1_10pct", "probe 10%"),
              ("knn_top1_1pct", "kNN 1%"), ("probe_top1_1pct", "probe 1%"))
# With --finetune_epochs: the run fine-tuned end to end, and the same
# network fine-tuned from its initialisation (`finetune.py --step=0`).
FINETUNED = (("finetune_top1", "fine-tune"), ("scratch_top1", "from scratch"))


def method_config(name: str, dataset: str, epochs=None, overrides: str = ""):
  """`configs/<name>.py`'s config for `dataset`, with `epochs` if given,
  then `overrides` ("key=value,...")."""
  arg = dataset if epochs is None else f"{dataset},total_epochs={epochs}"
  arg = f"{arg},{overrides}" if overrides else arg
  return importlib.import_module(f"configs.{name}").get_config(arg)


ROW_FILE = "table_row.json"


def reused_rows(path: str, recipe: dict) -> dict:
  """{(method, seed): row} of the finished runs of the table.json at
  `path`; a row made with another `recipe` (dataset, epochs, overrides) is
  an error."""
  with open(path, encoding="utf-8") as f:
    runs = json.load(f)["runs"]
  rows = {}
  for name, seed_rows in runs.items():
    for row in seed_rows:
      if name == PIXELS or "error" in row:
        continue
      made_with = {key: row.get(key) for key in recipe}
      if made_with != recipe:
        raise app.UsageError(f"--reuse={path}: the {name} seed {row['seed']} "
                             f"row was made with {made_with}, not {recipe}.")
      rows[name, row["seed"]] = row
  return rows


def run_method(name: str, dataset: str, workdir: str, epochs=None,
               overrides: str = "", seed: int = 0, monitor: bool = True
               ) -> dict:
  """Trains and scores one method with one seed; a failure is returned as
  `error`. Without `monitor` the encoder is scored only at the end (the
  scores are the same: evaluation changes neither the state nor the
  training's random numbers).

  A finished run's row is saved in `<workdir>/table_row.json` and read back
  on the next invocation, so a table re-run to add methods or seeds keeps
  the others' wall times.
  """
  row_path = os.path.join(workdir, ROW_FILE)
  if os.path.exists(row_path):
    with open(row_path, encoding="utf-8") as f:
      return json.load(f)
  start = time.perf_counter()
  seeded = f"seed={seed}" + (f",{overrides}" if overrides else "")
  try:
    config = method_config(name, dataset, epochs, seeded)
    if not monitor:
      config.eval_every = 0
    final = _cli.pretrain(config, workdir)
  except Exception as error:  # pylint: disable=broad-except
    # One broken method must not cost the table the others' numbers.
    logging.error("table: %s failed:\n%s", name, traceback.format_exc())
    return {"method": name, "seed": seed,
            "error": f"{type(error).__name__}: {error}"}
  throughput = [r["images_per_sec"] for r in metrics_lib.read_metrics(workdir)
                if r.get("images_per_sec") is not None]
  row = {"method": name, "seed": seed,
         **{key: final.get(key) for key, _ in ACCURACIES},
         "images_per_sec": statistics.median(throughput) if throughput
                           else None,
         "wall_s": time.perf_counter() - start, "commit": commit(),
         "dataset": dataset, "epochs": epochs, "overrides": overrides}
  if final["step"] == config.total_steps and jax.process_index() == 0:
    with open(row_path, "w", encoding="utf-8") as f:
      json.dump(row, f)
  return row


def finetune_scores(workdir: str, epochs: int) -> dict:
  """{"finetune_top1", "scratch_top1"} of the finished run in `workdir`:
  `finetune.py`'s protocol for `epochs` on its last checkpoint and on its
  initialisation (step 0), each resumed or re-scored if already run; a
  failure is returned as `error`, None where SIGTERM stopped the run."""
  scores = {}
  for (key, _), step in zip(FINETUNED, (None, 0)):
    try:
      _, result = _cli.finetune(workdir, step, {"epochs": epochs})
    except Exception as error:  # pylint: disable=broad-except
      logging.error("table: fine-tuning %s failed:\n%s", workdir,
                    traceback.format_exc())
      return {"error": f"fine-tuning: {type(error).__name__}: {error}"}
    scores[key] = None if result is None else result["finetune_top1"]
  return scores


def pixel_baseline(dataset: str, seed: int = 0) -> dict | None:
  """The "raw pixels" row: the flattened images, in [0, 1], scored as
  encoders are (`ssljax.train.evaluation.score` and `few_label_scores`,
  the probe seeded with `seed`); None if too large."""
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
  scores = {**evaluation.score(features, num_classes=meta.num_classes,
                               linear=True, seed=seed),
            **evaluation.few_label_scores(features,
                                          num_classes=meta.num_classes,
                                          seed=seed)}
  return {"method": PIXELS, "seed": seed,
          **{key: scores[key] for key, _ in ACCURACIES},
          "images_per_sec": None, "wall_s": time.perf_counter() - start}


def aggregate(runs: list[dict]) -> dict:
  """One row of a method's runs (one per seed): for each accuracy and
  images/s, (mean, sample standard deviation or None for one run, n);
  wall time summed; the first error if any run failed.

  Example:
    >>> row = aggregate([{"method": "m", "knn_top1": 0.90, "wall_s": 10},
    ...                  {"method": "m", "knn_top1": 0.94, "wall_s": 12}])
    >>> mean, std, n = row["knn_top1"]
    >>> print(round(mean, 4), round(std, 4), n, row["wall_s"])
    0.92 0.0283 2 22
  """
  row = {"method": runs[0]["method"]}
  errors = [r["error"] for r in runs if "error" in r]
  if errors:
    return {**row, "error": errors[0]}
  for key in (*(k for k, _ in ACCURACIES + FINETUNED), "images_per_sec"):
    values = [r[key] for r in runs if r.get(key) is not None]
    row[key] = None if not values else (
        statistics.mean(values),
        statistics.stdev(values) if len(values) > 1 else None, len(values))
  row["wall_s"] = sum(r["wall_s"] for r in runs)
  return row


def beats(row: dict, pixels: dict | None) -> list[str]:
  """Titles of the accuracy columns where `row` beats `pixels` beyond the
  spread: mean − std > pixels' mean + std (std 0 when unknown). Fine-tuning
  is compared with the same network trained from the raw pixels, the row's
  "from scratch" column.

  Example:
    >>> pixels = {"knn_top1": (0.948, None, 1), "probe_top1": (0.9, 0.01, 3)}
    >>> row = {"knn_top1": (0.96, 0.005, 3), "probe_top1": (0.92, 0.02, 3),
    ...        "finetune_top1": (0.97, 0.01, 3),
    ...        "scratch_top1": (0.93, 0.02, 3)}
    >>> beats(row, pixels)
    ['kNN', 'fine-tune']
  """
  if "error" in row:
    return []
  pairs = [(title, row.get(key), pixels.get(key))
           for key, title in ACCURACIES] if pixels else []
  (tuned, title), (scratch, _) = FINETUNED
  pairs.append((title, row.get(tuned), row.get(scratch)))
  return [title for title, mine, theirs in pairs
          if mine is not None and theirs is not None
          and mine[0] - (mine[1] or 0.0) > theirs[0] + (theirs[1] or 0.0)]


def commit() -> str:
  """The checkout's short commit, "with local changes" when the tracked
  files differ from it (a row says what trained it)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args):
    done = subprocess.run(["git", *args], cwd=root, capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""

  short = git("rev-parse", "--short", "HEAD") or "unknown"
  dirty = " with local changes" if git("status", "--porcelain",
                                       "--untracked-files=no") else ""
  return short + dirty


def provenance(argv: list[str], seeds: int, seconds: float,
               row_commits=()) -> str:
  """Where a table came from: the command, the commit (and whether the tree
  had local changes), the CPU, JAX's version and device, seeds and time;
  and the commits that trained reused rows, where they differ."""
  here = commit()
  older = sorted(set(row_commits) - {here, None})
  trained = (f" (rows reused from commit(s) {', '.join(older)})"
             if older else "")
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f
                  if line.startswith("model name")), cpu)
  except OSError:
    pass
  minutes, secs = divmod(round(seconds), 60)
  return (f"`python experiments/table.py {' '.join(argv[1:])}` at commit "
          f"`{here}`{trained}; {cpu} ({os.cpu_count()} cores), JAX "
          f"{jax.__version__} on {jax.devices()[0].platform}; seeds 0-"
          f"{seeds - 1}; {minutes // 60} h {minutes % 60} min {secs} s.")


def markdown(rows, pixels: dict | None = None) -> str:
  """Aggregated rows (`aggregate`) as a markdown table; the fine-tuning
  columns only if some row has them.

  Example:
    >>> row = {"method": "simclr", "knn_top1": (0.91234, 0.001, 3),
    ...        "probe_top1": (0.95, None, 1), "images_per_sec": (812.3, 1, 3),
    ...        "wall_s": 150.2}
    >>> print(markdown([row, {"method": "dino", "error": "ValueError: x"}]))
    | method | kNN | probe | kNN 10% | probe 10% | kNN 1% | probe 1% | images/s | wall time (s) | beats pixels on |
    |---|---|---|---|---|---|---|---|---|---|
    | simclr | 91.23 ± 0.10 | 95.00 | n/a | n/a | n/a | n/a | 812 | 150 | - |
    | dino | failed: ValueError: x | - | - | - | - | - | - | - | - |
  """
  accuracies = ACCURACIES + (FINETUNED if any(
      row.get(key) for row in rows for key, _ in FINETUNED) else ())
  columns = ("method", *(title for _, title in accuracies), "images/s",
             "wall time (s)", "beats pixels on")
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in rows:
    if "error" in row:
      cells = [row["method"], f"failed: {row['error']}",
               *["-"] * (len(columns) - 2)]
    else:
      won = beats(row, pixels) if row["method"] != PIXELS else []
      speed = row.get("images_per_sec")
      cells = [row["method"],
               *(_percent(row.get(key)) for key, _ in accuracies),
               _number(speed[0] if speed else None), _number(row["wall_s"]),
               ", ".join(won) or ("n/a" if row["method"] == PIXELS else "-")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _percent(value) -> str:
  """(mean, std, n) as "mean ± std" in percent."""
  if value is None:
    return "n/a"
  mean, std, _ = value
  return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _number(value) -> str:
  return "n/a" if value is None else f"{value:.0f}"


def run_seed(name: str, dataset: str, workdir: str, epochs, seed: int
             ) -> dict:
  """`run_method` with the command line's settings, then with
  `--finetune_epochs` `finetune_scores`."""
  row = run_method(name, dataset, workdir, epochs, _OVERRIDES.value, seed,
                   monitor=not _QUICK.value)
  finetune_epochs = _FINETUNE_EPOCHS.value
  if finetune_epochs is None or "error" in row:
    return row
  return {**row, "finetune_epochs": finetune_epochs,
          **finetune_scores(workdir, finetune_epochs)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _cli.start()
  started = time.perf_counter()
  dataset, seeds = _DATASET.value, _SEEDS.value
  if seeds < 1:
    raise app.UsageError(f"--seeds must be >= 1, got {seeds}.")
  workdir = _WORKDIR.value or os.path.join("runs", f"table_{dataset}")
  epochs = _EPOCHS.value
  if epochs is None and _QUICK.value:
    epochs = QUICK_EPOCHS
  names = _METHODS.value or methods.names()
  reused = reused_rows(_REUSE.value, {
      "dataset": dataset, "epochs": epochs, "overrides": _OVERRIDES.value,
      "finetune_epochs": _FINETUNE_EPOCHS.value}) if _REUSE.value else {}
  runs = {}
  baselines = [pixel_baseline(dataset, seed) for seed in range(seeds)]
  if baselines[0] is not None:
    runs[PIXELS] = baselines
  for name in names:
    logging.info("table: training %s on %s", name, dataset)
    runs[name] = [reused.get((name, seed)) or run_seed(
        name, dataset, os.path.join(workdir, name, f"seed{seed}"), epochs,
        seed) for seed in range(seeds)]
  if jax.process_index() != 0:
    return
  rows = [aggregate(seed_rows) for seed_rows in runs.values()]
  pixels = rows[0] if PIXELS in runs else None
  source = provenance(sys.argv, seeds, time.perf_counter() - started,
                      [r.get("commit") for seed_rows in runs.values()
                       for r in seed_rows])
  table = markdown(rows, pixels)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
    f.write(f"{source}\n\n{table}\n")
  with open(os.path.join(workdir, "table.json"), "w", encoding="utf-8") as f:
    json.dump({"source": source, "rows": rows, "runs": runs}, f, indent=1)
  metrics_lib.plot_bars(
      os.path.join(workdir, "table.png"), [r["method"] for r in rows],
      {key: [r[key][0] if r.get(key) else None for r in rows]
       for key in ("knn_top1", "probe_top1", "knn_top1_1pct",
                   "probe_top1_1pct")},
      title=f"{dataset}: top-1 of the frozen encoders, mean of {seeds} "
            f"seed(s)")
  print(source)
  print(table)
  trained = [r for r in rows if r["method"] != PIXELS]
  ok = sum("error" not in r for r in trained)
  print(f"table: {ok} of {len(trained)} methods trained on {dataset}; "
        f"{os.path.join(workdir, 'table.md')}", flush=True)


if __name__ == "__main__":
  app.run(main)
