"""SIGTERM to one process of a 2-process run: the JAX preemption service makes
both save the same step together and exit cleanly."""

import signal
import time

from _multihost_launch import launch, wait_all
from ssljax.train import checkpoint
from ssljax.train.metrics import read_metrics


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  total = 40
  workers = launch(2, f"--workdir={tmp_path}", "--devices=2",
                   f"--total_steps={total}", "--step_sleep=0.2")
  deadline = time.time() + 240
  while len(read_metrics(tmp_path)) < 2:
    assert all(w.poll() is None for w in workers), wait_all(workers)
    assert time.time() < deadline
    time.sleep(0.1)
  workers[1].send_signal(signal.SIGTERM)
  outputs = wait_all(workers)
  saved = checkpoint.Checkpointer(tmp_path).latest_step()
  assert 2 <= saved < total
  for i, output in enumerate(outputs):
    assert f"process {i} done at step {saved}" in output, output[-3000:]
  assert [r["step"] for r in read_metrics(tmp_path)][-1] == saved
