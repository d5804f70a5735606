"""End-to-end tests of the command lines: pretrain.py and linear_eval.py.

Each command runs in a subprocess, as a user runs it, on MNIST-5k with a
tiny budget (6 steps of 32 images, one device).
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from ssljax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ["--config.total_steps=6", "--config.batch_size=32",
        "--config.optimizer.warmup_steps=1", "--config.checkpoint_every=3",
        "--config.log_every=1", "--config.eval_every=3",
        "--config.method.backbone_kwargs.widths=(8,8)",
        "--config.method.backbone_kwargs.strides=(1,2)",
        "--config.method.backbone_kwargs.pooling=avg",
        "--config.method.proj_hidden_dim=16", "--config.method.proj_dim=8"]


def launch(script, *flags, data_dir, **env):
  """Runs experiments/<script> on one CPU device, `env` added to the
  environment; returns the finished process."""
  env = dict(os.environ, TFDS_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1", **env)
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", script), *flags],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
      check=False)


def run(script, *flags, data_dir, **env):
  """`launch`, which must succeed; returns stdout's lines."""
  done = launch(script, *flags, data_dir=data_dir, **env)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout.strip().splitlines()


def without_timing(metrics):
  return {k: v for k, v in metrics.items() if k != "images_per_sec"}


def summary_values(line):
  """{name: value} of a summary line's `name=value` words."""
  return {k: float(v) for k, v in
          (word.split("=") for word in line.split(": ", 1)[1].split())}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A finished tiny run: (workdir, data_dir, the printed lines)."""
  workdir = tmp_path_factory.mktemp("run")
  data_dir = tmp_path_factory.mktemp("data")
  lines = run("pretrain.py", f"--workdir={workdir}", *TINY, data_dir=data_dir)
  return workdir, data_dir, lines


def test_pretrain_writes_the_run(pretrained):
  workdir, _, lines = pretrained
  assert lines[-1].startswith("simclr on mnist5k, step 6: knn_top1=")
  values = summary_values(lines[-1])
  assert list(values)[:2] == ["knn_top1", "probe_top1"]
  # Even 6 steps of a random CNN beat chance (0.1) by far on MNIST.
  assert 0.3 < values["knn_top1"] <= 1 and 0.3 < values["probe_top1"] <= 1

  names = set(os.listdir(workdir))
  assert {"config.json", "metrics.jsonl", "summary.json",
          "curves.png"} <= names
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  with open(workdir / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  records = read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  # Evaluated at every checkpoint (the default interval), probed at the end.
  evaluated = [r["step"] for r in records if "knn_top1" in r]
  assert evaluated == [3, 6]
  assert [r["step"] for r in records if "probe_top1" in r] == [6]
  final = records[-1]
  for key in ("knn1_top1", "embedding_std", "rankme", "images_per_sec"):
    assert np.isfinite(final[key])
  assert 1 <= final["rankme"] <= 8  # At most the feature width.
  with open(workdir / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  assert summary["step"] == 6
  assert summary["knn_top1"] == pytest.approx(values["knn_top1"], abs=1e-4)
  assert summary["probe_top1"] == final["probe_top1"]


def test_pretrain_again_resumes_and_reprints_the_summary(pretrained):
  workdir, data_dir, lines = pretrained
  before = read_metrics(workdir)
  again = run("pretrain.py", f"--workdir={workdir}", *TINY, data_dir=data_dir)
  assert again[-1] == lines[-1]
  assert read_metrics(workdir) == before


def test_pretrain_resumes_an_interrupted_run(pretrained, tmp_path):
  """A run that stopped after its step-3 checkpoint, run again, ends as the
  uninterrupted run: same log (timings aside) and same summary line."""
  workdir, data_dir, lines = pretrained
  interrupted = tmp_path / "interrupted"
  shutil.copytree(workdir, interrupted)
  shutil.rmtree(interrupted / "checkpoints" / "6")
  for name in ("summary.json", "curves.png"):
    os.remove(interrupted / name)
  again = run("pretrain.py", f"--workdir={interrupted}", *TINY,
              data_dir=data_dir)
  assert without_timing(summary_values(again[-1])) == \
      without_timing(summary_values(lines[-1]))
  resumed, original = read_metrics(interrupted), read_metrics(workdir)
  assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
  for a, b in zip(resumed, original):
    assert without_timing(a) == pytest.approx(without_timing(b), abs=1e-5)
  assert os.path.exists(interrupted / "curves.png")


# Two short epochs of the standard protocol on 10% of the labels (the full
# protocol is tested in tests/test_linear_eval.py).
SHORT_LINEAR = ["--protocol.epochs=2", "--protocol.label_fraction=0.1",
                "--protocol.optimizer.learning_rate=5.0",
                "--protocol.batch_size=64"]


def test_linear_eval_on_the_run(pretrained):
  workdir, data_dir, _ = pretrained
  lines = run("linear_eval.py", f"--workdir={workdir}", *SHORT_LINEAR,
              data_dir=data_dir)
  assert lines[-1].startswith("simclr on mnist5k, step 6: knn_top1=")
  assert "linear_top1=" in lines[-1]
  with open(workdir / "linear_eval_10pct.json", encoding="utf-8") as f:
    result = json.load(f)
  with open(workdir / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  # Above chance (0.1) after 14 steps on the features of a 6-step net.
  assert 0.12 < result["linear_top1"] <= 1
  # The same checkpoint, features and probe as the run's final evaluation.
  for key in ("knn_top1", "knn1_top1", "probe_top1", "rankme"):
    assert result[key] == pytest.approx(summary[key], abs=1e-4), key
  earlier = run("linear_eval.py", f"--workdir={workdir}", "--step=3",
                "--monitors=false", *SHORT_LINEAR, data_dir=data_dir)
  assert earlier[-1].startswith("simclr on mnist5k, step 3:")


def test_linear_eval_needs_a_run(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "linear_eval.py"),
       f"--workdir={tmp_path}"], env=env, capture_output=True, text=True,
      timeout=120, check=False)
  assert done.returncode != 0
  assert "config.json not found" in done.stderr


def cells(line):
  return [c.strip() for c in line.strip("|").split("|")]


def test_table_with_seeds_aggregates_and_reports_failures(tmp_path):
  """`--seeds=2` on two tiny methods: each seed its own run, the cells the
  mean ± std of the seeds' rows, the provenance line, the pixel baseline
  with its few-label columns; a failing method gets its error."""
  data_dir = tmp_path / "data"
  overrides = ("total_steps=3,batch_size=32,optimizer.warmup_steps=1,"
               "checkpoint_every=3,method.backbone=tiny_cnn,"
               "method.backbone_kwargs={'width':8}")
  lines = run("table.py", f"--workdir={tmp_path}", "--methods=simclr,dcl",
              "--seeds=2", f"--overrides={overrides}", data_dir=data_dir)
  assert lines[-1].startswith("table: 2 of 2 methods trained on mnist5k")
  with open(tmp_path / "table.md", encoding="utf-8") as f:
    source, _, *table = f.read().splitlines()
  assert "--seeds=2" in source and "at commit `" in source
  assert "seeds 0-1" in source and f"JAX {jax.__version__}" in source
  assert cells(table[0])[:7] == ["method", "kNN", "probe", "kNN 10%",
                                 "probe 10%", "kNN 1%", "probe 1%"]
  pixels = cells(table[2])
  # The raw-pixel baseline of mnist5k: kNN and logistic regression on the
  # 784 pixels score ~0.95 and ~0.89 on this split; kNN has no spread.
  assert pixels[0] == "raw pixels" and pixels[1].endswith(" ± 0.00")
  assert 93 < float(pixels[1].split("±")[0]) < 97
  assert 86 < float(pixels[2].split("±")[0]) < 93
  # Four labels per class are far weaker than all of them.
  assert float(pixels[5].split("±")[0]) < float(pixels[1].split("±")[0])
  with open(tmp_path / "table.json", encoding="utf-8") as f:
    saved = json.load(f)
  simclr = cells(table[3])
  assert simclr[0] == "simclr"
  seed_runs = saved["runs"]["simclr"]
  assert [r["seed"] for r in seed_runs] == [0, 1]
  knn = [r["knn_top1"] for r in seed_runs]
  assert knn[0] != knn[1]  # The seed changes the run.
  for seed, row in enumerate(seed_runs):
    with open(tmp_path / "simclr" / f"seed{seed}" / "summary.json",
              encoding="utf-8") as f:
      summary = json.load(f)
    for key in ("knn_top1", "probe_top1", "knn_top1_1pct",
                "probe_top1_10pct"):
      assert row[key] == summary[key], key
  mean, std = simclr[1].split("±")
  assert float(mean) == pytest.approx(100 * np.mean(knn), abs=0.006)
  assert float(std) == pytest.approx(100 * np.std(knn, ddof=1), abs=0.006)
  with open(tmp_path / "table.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert seed_runs[0]["commit"] in source
  # Re-running reuses the finished runs' rows (wall time included), and
  # names the commit that trained a row made at another one.
  row_path = tmp_path / "dcl" / "seed1" / "table_row.json"
  row = json.loads(row_path.read_text(encoding="utf-8"))
  row_path.write_text(json.dumps({**row, "commit": "0123abc"}),
                      encoding="utf-8")
  run("table.py", f"--workdir={tmp_path}", "--methods=simclr,dcl",
      "--seeds=2", f"--overrides={overrides}", data_dir=data_dir)
  with open(tmp_path / "table.md", encoding="utf-8") as f:
    source, *again = f.read().splitlines()
  assert again[4] == table[3]
  assert "(rows reused from commit(s) 0123abc)" in source
  # `--reuse` takes a saved table's rows into a new workdir, no training;
  # rows of another recipe are refused.
  saved_table = tmp_path / "table.json"
  run("table.py", f"--workdir={tmp_path / 'more'}", "--methods=simclr,dcl",
      "--seeds=2", f"--overrides={overrides}", f"--reuse={saved_table}",
      data_dir=data_dir)
  with open(tmp_path / "more" / "table.md", encoding="utf-8") as f:
    assert f.read().splitlines()[5] == table[3]
  assert not (tmp_path / "more" / "simclr").exists()
  refused = launch("table.py", f"--workdir={tmp_path / 'other'}",
                   "--methods=simclr", "--quick", f"--reuse={saved_table}",
                   data_dir=data_dir)
  assert refused.returncode != 0 and "was made with" in refused.stderr

  # A method that cannot run gets its error in the table; the rest go on.
  lines = run("table.py", f"--workdir={tmp_path / 'bad'}",
              "--methods=simclr,byol", "--overrides=no_such_field=1",
              data_dir=data_dir)
  assert lines[-1].startswith("table: 0 of 2 methods trained")
  with open(tmp_path / "bad" / "table.md", encoding="utf-8") as f:
    rows = f.read().splitlines()[5:]
  assert [r.split("|")[1].strip() for r in rows] == ["simclr", "byol"]
  assert all("failed: ValueError" in r and "no_such_field" in r for r in rows)


def test_quick_table_scores_only_at_the_end(tmp_path):
  """`--quick` trains 5 epochs and skips the mid-run kNN monitors; the
  final scores are those of the same run with them."""
  data_dir = tmp_path / "data"
  overrides = ("total_steps=4,batch_size=32,optimizer.warmup_steps=1,"
               "checkpoint_every=2,method.backbone=tiny_cnn,"
               "method.backbone_kwargs={'width':8}")
  tables = {}
  for flag in ("--quick", "--epochs=5"):
    workdir = tmp_path / flag.strip("-")
    run("table.py", f"--workdir={workdir}", "--methods=simclr", flag,
        f"--overrides={overrides}", data_dir=data_dir)
    scored = [r["step"] for r in read_metrics(workdir / "simclr" / "seed0")
              if "knn_top1" in r]
    assert scored == ([4] if flag == "--quick" else [2, 4])
    with open(workdir / "table.json", encoding="utf-8") as f:
      tables[flag] = json.load(f)["runs"]["simclr"][0]
  assert tables["--quick"]["epochs"] == 5.0
  for key in ("knn_top1", "probe_top1", "knn_top1_1pct", "probe_top1_10pct"):
    assert tables["--quick"][key] == tables["--epochs=5"][key], key


def test_table_fine_tunes_each_run_and_its_initialisation(tmp_path):
  """`--finetune_epochs` adds the run fine-tuned and the same network
  fine-tuned from its initialisation (`finetune.py --step=0`); fine-tuning
  beats the pixels only against the latter."""
  data_dir = tmp_path / "data"
  overrides = ("total_steps=8,batch_size=32,optimizer.warmup_steps=1,"
               "checkpoint_every=8,method.backbone=tiny_cnn,"
               "method.backbone_kwargs={'width':8}")
  run("table.py", f"--workdir={tmp_path}", "--methods=simclr",
      "--finetune_epochs=6", f"--overrides={overrides}", data_dir=data_dir)
  with open(tmp_path / "table.md", encoding="utf-8") as f:
    _, _, header, _, pixels, simclr = f.read().splitlines()
  assert cells(header)[7:9] == ["fine-tune", "from scratch"]
  assert cells(pixels)[7:9] == ["n/a", "n/a"]
  run_dir = tmp_path / "simclr" / "seed0"
  scores = {}
  for name, column in (("finetune", 7), ("finetune_step0", 8)):
    with open(run_dir / f"{name}.json", encoding="utf-8") as f:
      result = json.load(f)
    assert result["step"] == (0 if name.endswith("step0") else 8)
    scores[name] = result["finetune_top1"]
    assert float(cells(simclr)[column]) == pytest.approx(
        100 * scores[name], abs=0.006)
  with open(tmp_path / "table.json", encoding="utf-8") as f:
    row = json.load(f)["runs"]["simclr"][0]
  assert row["finetune_epochs"] == 6
  assert row["scratch_top1"] == scores["finetune_step0"]
  assert scores["finetune"] != scores["finetune_step0"]
  won = cells(simclr)[-1]
  assert ("fine-tune" in won) == (scores["finetune"] > scores["finetune_step0"])
  # Its rows are reused only by a table with the same fine-tuning.
  refused = launch("table.py", f"--workdir={tmp_path / 'other'}",
                   "--methods=simclr", f"--overrides={overrides}",
                   f"--reuse={tmp_path / 'table.json'}", data_dir=data_dir)
  assert refused.returncode != 0 and "was made with" in refused.stderr


USER_METHOD = '''
"""A method of the user's own, outside ssljax: NT-Xent on a two-layer CNN,
built only from ssljax's public API."""
from ssljax import methods


def tiny_contrast(*, width=8, dim=8, temperature=0.3, dtype="float32"):
  return methods.simclr(
      backbone="small_cnn", dtype=dtype, temperature=temperature,
      backbone_kwargs={"widths": (width, width), "strides": (1, 2),
                       "pooling": "avg"},
      proj_hidden_dim=16, proj_dim=dim)._replace(name="tiny_contrast")
'''

USER_CONFIG = '''
from configs import common


def get_config(arg="mnist5k"):
  return common.get_config("user_method:tiny_contrast", arg, {"mnist5k": {
      "batch_size": 32, "total_steps": 3, "checkpoint_every": 3,
      "optimizer.warmup_steps": 1}})
'''


def test_pretrain_trains_a_method_of_a_users_module(tmp_path):
  """A factory in the user's own module, named "module:factory" by the
  user's own config file, trains through `pretrain.py` without touching
  ssljax; its hyper-parameters are command-line fields like any method's."""
  (tmp_path / "user_method.py").write_text(USER_METHOD, encoding="utf-8")
  (tmp_path / "user_config.py").write_text(USER_CONFIG, encoding="utf-8")
  workdir = tmp_path / "run"
  flags = [f"--config={tmp_path / 'user_config.py'}", f"--workdir={workdir}",
           "--config.method.temperature=0.5"]
  lines = run("pretrain.py", *flags, data_dir=tmp_path / "data",
              PYTHONPATH=str(tmp_path))
  with open(workdir / "config.json", encoding="utf-8") as f:
    method = json.load(f)["method"]
  assert method["name"] == "user_method:tiny_contrast"
  assert method["temperature"] == 0.5
  assert [m["step"] for m in read_metrics(str(workdir)) if "loss" in m][-1] == 3
  assert lines[-1].startswith(
      "user_method:tiny_contrast on mnist5k, step 3: knn_top1=")
  # A field the user's factory does not take is an error naming it.
  bad = launch("pretrain.py", *flags, "--config.method.proj_layers=2",
               data_dir=tmp_path / "data", PYTHONPATH=str(tmp_path))
  assert bad.returncode != 0 and "proj_layers" in bad.stderr
