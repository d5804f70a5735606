"""Noticing SIGTERM (preemption) so that the loop can save and exit cleanly.

Single-process runs install a SIGTERM handler that only sets a flag; the loop
polls it after every step. Multi-process runs use the preemption service that
`jax.distributed.initialize` starts: it catches SIGTERM in any process and
makes every process report the preemption at the *same* step, which the
collective checkpoint save needs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

import jax
from absl import logging
from jax.experimental import multihost_utils


@contextlib.contextmanager
def watch_preemption() -> Iterator[Callable[[int], bool]]:
  """Yields `preempted(step) -> bool`, to be called by every process each step.

  In a single process, SIGTERM is caught for the duration of the context
  (the previous handler is restored on exit); outside the main thread, where
  Python cannot install handlers, `preempted` is always False, as it is in a
  multi-process run whose preemption service is switched off.

  Example:
    >>> import os, signal
    >>> from ssljax.train.preemption import watch_preemption
    >>> with watch_preemption() as preempted:
    ...   before = preempted(1)
    ...   os.kill(os.getpid(), signal.SIGTERM)
    ...   after = preempted(2)
    >>> print(before, after)
    False True
  """
  multi_process = jax.process_count() > 1
  if multi_process and jax.config.jax_enable_preemption_service:
    yield multihost_utils.reached_preemption_sync_point
    return
  if multi_process or threading.current_thread() is not threading.main_thread():
    logging.warning(
        "watch_preemption: SIGTERM will not be caught (%s).",
        "jax_enable_preemption_service is off" if multi_process
        else "not in the main thread")
    yield lambda step: False
    return
  received = threading.Event()

  def handler(signum, frame):
    del signum, frame
    received.set()

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield lambda step: received.is_set()
  finally:
    signal.signal(signal.SIGTERM, previous)
