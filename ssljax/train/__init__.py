"""ssljax.train: the state, optimizers, sharded step, checkpoints and loop.

* `train(config, workdir)`: pre-train a method, resumable, on one or many
  hosts; `restore_state` loads what it saved; `fit_to_run` shrinks
  epoch-counted settings to a shortened run; `load_train` the train batches.
* `TrainState`, `create_train_state`: everything carried between steps.
* `make_optimizer`, `learning_rate_schedule`, `decay_mask`, `freeze`: the
  papers' LARS / AdamW / SGD with warm-up, cosine decay, their parameter
  groups and step-dependent freezes.
* `make_train_step`: one jitted, data-parallel update.
* `make_mesh`, `replicated`, `data_sharded`, `check_batch_size`: the
  ("data",) mesh and its shardings.
* `Checkpointer`, `IncompatibleCheckpointError` (module `checkpoint`),
  `MetricsWriter`, `read_metrics`, `watch_preemption`, and `distributed`
  (multi-process start-up).
"""

from ssljax.train import checkpoint
from ssljax.train import distributed
from ssljax.train.checkpoint import Checkpointer
from ssljax.train.checkpoint import IncompatibleCheckpointError
from ssljax.train.loop import fit_to_run
from ssljax.train.loop import load_train
from ssljax.train.loop import restore_state
from ssljax.train.loop import train
from ssljax.train.metrics import MetricsWriter
from ssljax.train.metrics import read_metrics
from ssljax.train.optim import decay_mask
from ssljax.train.optim import freeze
from ssljax.train.optim import learning_rate_schedule
from ssljax.train.optim import make_optimizer
from ssljax.train.preemption import watch_preemption
from ssljax.train.sharding import check_batch_size
from ssljax.train.sharding import data_sharded
from ssljax.train.sharding import make_mesh
from ssljax.train.sharding import replicated
from ssljax.train.state import TrainState
from ssljax.train.state import create_train_state
from ssljax.train.step import make_train_step

__all__ = [
    "Checkpointer", "IncompatibleCheckpointError", "MetricsWriter",
    "TrainState", "check_batch_size", "checkpoint", "create_train_state",
    "data_sharded", "decay_mask", "distributed", "fit_to_run", "freeze",
    "learning_rate_schedule", "load_train",
    "make_mesh", "make_optimizer", "make_train_step", "read_metrics",
    "replicated", "restore_state", "train", "watch_preemption",
]
