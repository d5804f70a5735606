"""The device mesh of a training run and the two shardings the step uses.

Training is data parallel over one mesh axis, "data", spanning every device of
every process. The train state is replicated; a batch is split along its first
dimension. Under `jax.jit` the step then sees the global batch, so BatchNorm
statistics and in-batch negatives are global without hand-written collectives.
"""

from __future__ import annotations

from typing import Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(config=None) -> Mesh:
  """A 1-D `("data",)` mesh over the global devices.

  The axis type is `Auto`: the compiler propagates shardings through the
  methods' code (global view), which is written without sharding annotations.

  Args:
    config: optional experiment config; `config.mesh.data` is the number of
      devices on the "data" axis, -1 (the default) for all of them.

  Returns:
    A `jax.sharding.Mesh` with one axis named "data".

  Raises:
    ValueError: if `config.mesh.data` is neither -1 nor in [1, device count].

  Example:
    >>> import jax
    >>> from ssljax.train import make_mesh
    >>> mesh = make_mesh()
    >>> print(mesh.axis_names, mesh.size == jax.device_count())
    ('data',) True
  """
  devices = jax.devices()
  size = _mesh_size(config, len(devices))
  return jax.make_mesh((size,), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:size])


def _mesh_size(config, device_count: int) -> int:
  mesh_config = None if config is None else config.get("mesh")
  size = -1 if mesh_config is None else mesh_config.get("data", -1)
  if size == -1:
    return device_count
  if not 1 <= size <= device_count:
    raise ValueError(
        f"make_mesh: `config.mesh.data` must be -1 or in [1, {device_count}] "
        f"(the device count), got {size}.")
  return size


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (train state, metrics).

  Example:
    >>> from ssljax.train import make_mesh, replicated
    >>> print(tuple(replicated(make_mesh()).spec))
    ()
  """
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (batch) dimension is split over the "data" axis.

  Example:
    >>> from ssljax.train import data_sharded, make_mesh
    >>> print(tuple(data_sharded(make_mesh()).spec))
    ('data',)
  """
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh,
                     process_count: Optional[int] = None) -> int:
  """Checks a global batch splits evenly; returns this process's share.

  Args:
    batch_size: the global batch size (`config.batch_size`).
    mesh: the training mesh.
    process_count: number of processes feeding the batch
      (`jax.process_count()` by default).

  Returns:
    `batch_size // process_count`, the rows each process loads.

  Raises:
    ValueError: naming `config.batch_size` if it is not a positive multiple
      of the mesh size and of the process count.

  Example:
    >>> from ssljax.train import check_batch_size, make_mesh
    >>> mesh = make_mesh()
    >>> print(check_batch_size(8 * mesh.size, mesh, process_count=1) // mesh.size)
    8
  """
  process_count = (jax.process_count() if process_count is None
                   else process_count)
  for size, what in ((mesh.size, "devices on the 'data' mesh axis"),
                     (process_count, "processes")):
    if batch_size <= 0 or batch_size % size:
      raise ValueError(
          f"check_batch_size: `config.batch_size` must be a positive multiple "
          f"of the {size} {what}, got {batch_size}.")
  return batch_size // process_count
