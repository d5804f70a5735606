"""Train steps on 8 fake CPU devices equal the steps on one device.

Same global batch, same PRNG key: under `jax.jit` over the ("data",) mesh
every method sees the global batch (BatchNorm statistics, per view or
joint, negatives, the Sinkhorn sums, the DINO center, the queues, the
labels), and its augmentations do not depend on the sharding, so
parameters, model state and method state must match the single-device run.
"""

import jax
import numpy as np
import pytest

from test_methods import BATCH, batches, build, run_steps, step_config

# Two steps, so that the second one uses what the first one's post-update
# left: the EMA target, the pushed queue (full for SwAV, whose queue then
# joins the Sinkhorn step; wrapping for MoCo and NNCLR), the center, the
# unfrozen DINO last layer and SwAV prototypes (renormalised in place).
CASES = {
    "simclr": {},
    "byol": {},
    "dino": dict(freeze_last_layer_steps=1),
    "moco_v2": dict(queue_size=BATCH + BATCH // 2),
    "moco_v3": {},
    "swav": dict(queue_size=BATCH, freeze_prototypes_steps=1),
    "nnclr": dict(queue_size=BATCH + BATCH // 2),
    "barlow_twins": {},
    "supcon": {},
}
# Barlow Twins' first gradient (norm 93 on this batch) at 0.5 is a jump
# after which its second step turns the 6e-7 rounding differences of the
# sharded reductions into 2e-5; at 0.1 the loss still halves and they stay
# below 2e-6, while a wrong statistic would differ by far more.
LEARNING_RATE = {"barlow_twins": 0.1}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eight_devices_equal_one(name):
  assert jax.device_count() == 8
  steps = batches(2)
  runs = {}
  for devices in (8, 1):
    config = step_config(name, devices)
    # SGD, not Adam: Adam turns the rounding noise of gradients that are
    # zero in exact arithmetic (a bias followed by BatchNorm) into
    # learning-rate-sized steps of random sign.
    config.optimizer.update(name="sgd",
                            learning_rate=LEARNING_RATE.get(name, 0.5))
    runs[devices] = run_steps(build(name, **CASES[name]), config, steps)
  (history8, metrics8), (history1, metrics1) = runs[8], runs[1]
  for m8, m1 in zip(metrics8, metrics1):
    assert np.isfinite(m8["loss"])
    assert_close(m8, m1)
  for part in ("params", "model_state", "method_state"):
    assert_close(getattr(history8[-1], part), getattr(history1[-1], part))


def assert_close(tree8, tree1):
  """Leaf by leaf to 1e-5 of the leaf's largest entry: summation orders
  differ between the sharded and the single-device reductions, and a small
  entry can come from the cancellation of large ones."""
  def check(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(x, y, rtol=1e-5,
                               atol=1e-5 * max(1.0, np.abs(y).max()))
  jax.tree.map(check, tree8, tree1)
