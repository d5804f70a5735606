"""Starts `_multihost_worker.py` processes on loopback for the tests."""

import os
import socket
import subprocess
import sys

WORKER = os.path.join(os.path.dirname(__file__), "_multihost_worker.py")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(num_processes, *args):
  """`num_processes` workers with `args`; several share a coordinator."""
  flags = [[]]
  if num_processes > 1:
    address = f"127.0.0.1:{free_port()}"
    flags = [[f"--coordinator={address}", f"--num_processes={num_processes}",
              f"--process_id={i}"] for i in range(num_processes)]
  # The workers import this checkout's ssljax, whatever else is installed.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
  env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
  return [subprocess.Popen([sys.executable, WORKER, *args, *extra],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env)
          for extra in flags]


def wait_all(processes, timeout=300):
  """Waits for every process; asserts each exited with 0; their outputs."""
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(timeout=timeout)[0])
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  failed = [f"process {i} exited with {process.returncode}:\n{output[-5000:]}"
            for i, (process, output) in enumerate(zip(processes, outputs))
            if process.returncode != 0]
  assert not failed, "\n".join(failed)
  return outputs
