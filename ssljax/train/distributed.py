"""Starting JAX's multi-process runtime for a run on many hosts.

Explicit arguments win; without them the cluster is auto-detected the way
`jax.distributed.initialize()` does it (Slurm, Open MPI, Cloud TPU), and a
plain single machine runs as one process without the distributed runtime.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Optional

import jax

# The variables JAX's Slurm and Open MPI cluster detection reads.
_SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                    "SLURM_PROCID", "SLURM_LOCALID")
_OPEN_MPI_VARIABLE = "OMPI_MCA_orte_hnp_uri"


def detect_cluster() -> Optional[str]:
  """"slurm", "openmpi" or "tpu" when running in such a job, else None.

  Slurm: inside an `srun` step (its job, node list and task variables are
  set). Open MPI: launched by `mpirun`. Cloud TPU: libtpu is installed and
  TPU chips are visible (/dev/accel* or /dev/vfio).

  Example:
    >>> from ssljax.train.distributed import detect_cluster
    >>> print(detect_cluster() in (None, "slurm", "openmpi", "tpu"))
    True
  """
  if all(name in os.environ for name in _SLURM_VARIABLES):
    return "slurm"
  if _OPEN_MPI_VARIABLE in os.environ:
    return "openmpi"
  if (importlib.util.find_spec("libtpu") is not None
      and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))):
    return "tpu"
  return None


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Calls `jax.distributed.initialize` when the run spans several processes.

  Must run before any other JAX call. With all three arguments the runtime is
  started with them (any cluster); with none, it is started with JAX's
  auto-detection if `detect_cluster()` finds a cluster, and not at all
  otherwise.

  Args:
    coordinator_address: "host:port" of process 0's coordinator service.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).

  Returns:
    True if the distributed runtime was started.

  Raises:
    ValueError: naming the arguments if only some of the three are given, or
      `process_id` is out of range.

  Example:
    >>> from ssljax.train import distributed
    >>> distributed.initialize(num_processes=2)
    Traceback (most recent call last):
    ...
    ValueError: initialize: give all of `coordinator_address`, `num_processes` and `process_id` or none of them (auto-detection); missing: coordinator_address, process_id.
  """
  given = {"coordinator_address": coordinator_address,
           "num_processes": num_processes, "process_id": process_id}
  missing = [name for name, value in given.items() if value is None]
  if missing and len(missing) < len(given):
    raise ValueError(
        "initialize: give all of `coordinator_address`, `num_processes` and "
        "`process_id` or none of them (auto-detection); missing: "
        f"{', '.join(missing)}.")
  if not missing:
    if not 0 <= process_id < num_processes:
      raise ValueError(
          f"initialize: `process_id` must be in [0, num_processes="
          f"{num_processes}), got {process_id}.")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
    return True
  if detect_cluster() is None:
    return False
  jax.distributed.initialize()
  return True
