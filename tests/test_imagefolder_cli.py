"""Your own pictures, as a user trains on them: `pretrain.py
--config=configs/<method>.py:imagefolder --config.dataset.path=DIR` on a
generated folder of mixed sizes, formats and modes (with an unreadable
file), then `linear_eval.py` on its `val/`; a folder of plain images trains
and says that evaluation is skipped."""

import os
import subprocess
import sys

from _pictures import make_folder, save_picture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The preset's ResNet keyword arguments do not apply to the tiny net.
TINY_NET = ",method.backbone=tiny_cnn,method.backbone_kwargs={}"
TINY = ["--config.total_steps=3", "--config.batch_size=8",
        "--config.dataset.image_size=24", "--config.log_every=1",
        "--config.checkpoint_every=3", "--config.eval_every=0",
        "--config.method.proj_hidden_dim=16", "--config.method.proj_dim=8"]


def run(script, *flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", script), *flags],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
      check=False)
  assert done.returncode == 0, done.stderr[-4000:]
  return done.stdout.strip().splitlines(), done.stderr


def test_pretrain_on_a_labelled_folder_scores_val(tmp_path):
  folder = make_folder(tmp_path / "pictures", per_class=8, val_per_class=3)
  with open(os.path.join(folder, "train", "dog", "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8 not really a jpeg")
  workdir = tmp_path / "run"
  lines, log = run("pretrain.py", "--config=configs/simclr.py:imagefolder" + TINY_NET,
                   f"--config.dataset.path={folder}", f"--workdir={workdir}",
                   *TINY)
  summary = lines[-1]
  assert summary.startswith("simclr on imagefolder, step 3:"), summary
  assert "knn_top1=" in summary
  assert "broken.jpg" in log and "unreadable" in log.lower()
  # One short epoch of the standard protocol over the 25 labelled images.
  lines, _ = run("linear_eval.py", f"--workdir={workdir}",
                 "--protocol.epochs=1", "--protocol.batch_size=8")
  assert "knn_top1=" in lines[-1] and "linear_top1=" in lines[-1]


def test_pretrain_on_plain_images_skips_evaluation(tmp_path):
  folder = tmp_path / "plain"
  for i in range(10):
    save_picture(str(folder / "train" / f"{i}.jpg"), i, "rgb")
  lines, log = run("pretrain.py", "--config=configs/byol.py:imagefolder" + TINY_NET,
                   f"--config.dataset.path={folder}",
                   f"--workdir={tmp_path / 'run'}", *TINY,
                   "--config.method.pred_hidden_dim=16")
  # Said once, where evaluation would run (at the end here: eval_every=0).
  (said,) = [l for l in log.splitlines() if "evaluation skipped" in l]
  assert "unlabelled" in said
  assert lines[-1].startswith("byol on imagefolder, step 3:"), lines[-1]
  assert "knn_top1" not in lines[-1]
