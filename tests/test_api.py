"""The public API contract of DESIGN.md: names, signatures and docstrings."""

import ast
import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import ssljax
from ssljax import losses, state

# name -> keyword defaults fixed by DESIGN.md's contract table.
LOSS_CONTRACT = {
    "nt_xent": {"temperature": 0.5, "axis_name": None},
    "dcl": {"temperature": 0.1, "weighted": False, "axis_name": None},
    "info_nce": {"temperature": 1.0},
    "moco": {"temperature": 0.2},
    "nnclr": {"temperature": 0.1, "axis_name": None},
    "supcon": {"temperature": 0.1, "axis_name": None},
    "clip": {"temperature": 0.07, "axis_name": None},
    "bilinear_info_nce": {},
    "contrastive_pair": {"margin": 1.0},
    "triplet": {"margin": 0.2},
    "batch_triplet": {"margin": 0.2, "mining": "batch_hard"},
    "n_pair": {},
    "lifted_structured": {"margin": 1.0},
    "soft_nearest_neighbour": {"temperature": 1.0},
    "byol": {},
    "simsiam": {},
    "barlow_twins": {"lambda_": 5e-3, "axis_name": None},
    "vicreg": {"sim_weight": 25.0, "var_weight": 25.0, "cov_weight": 1.0,
               "axis_name": None},
    "dino": {"student_temp": 0.1, "teacher_temp": 0.04},
    "swav": {"temperature": 0.1, "epsilon": 0.05, "sinkhorn_iters": 3,
             "n_global": 2, "axis_name": None},
    "proto_nce": {},
    "center_loss": {},
    "sphereface": {},
    "cosface": {},
    "arcface": {},
}

POSITIONAL = {
    "nt_xent": ["z1", "z2"], "dcl": ["z1", "z2"], "info_nce": ["query", "positive", "negatives"],
    "moco": ["query", "key", "queue"], "nnclr": ["z1", "z2", "support"],
    "supcon": ["features", "labels"], "clip": ["a", "b"],
    "bilinear_info_nce": ["query", "key", "w"],
    "contrastive_pair": ["x1", "x2", "same"],
    "triplet": ["anchor", "positive", "negative"],
    "batch_triplet": ["embeddings", "labels"], "n_pair": ["anchors", "positives"],
    "lifted_structured": ["embeddings", "labels"],
    "soft_nearest_neighbour": ["embeddings", "labels"],
    "byol": ["prediction", "target"], "simsiam": ["prediction", "target"],
    "barlow_twins": ["z1", "z2"], "vicreg": ["z1", "z2"],
    "dino": ["student_logits", "teacher_logits", "center"], "swav": ["scores"],
}


@pytest.mark.parametrize("name", sorted(LOSS_CONTRACT))
def test_loss_signature_and_docstring(name):
  fn = getattr(losses, name)
  params = inspect.signature(fn).parameters
  for arg, default in LOSS_CONTRACT[name].items():
    assert arg in params, f"{name} lacks `{arg}`"
    assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY, (name, arg)
    assert params[arg].default == default, (name, arg, params[arg].default)
  leading = [p for p in params.values()
             if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
  if name in POSITIONAL:
    assert [p.name for p in leading] == POSITIONAL[name]
  doc = inspect.getdoc(fn) or ""
  # Formula, paper and a runnable example, as the conventions require.
  assert ">>>" in doc, f"{name} docstring has no example"
  assert re.search(r"\b(19|20)\d\d\b", doc), f"{name} cites no dated paper"
  assert any(c in doc for c in "=−·Σ"), f"{name} docstring has no formula"


def test_state_contract():
  assert callable(state.ema.update) and callable(state.ema.cosine_momentum)
  assert callable(state.queue.init) and callable(state.queue.push)
  assert callable(state.center.init) and callable(state.center.update)
  sig = inspect.signature(state.sinkhorn).parameters
  assert sig["epsilon"].default == 0.05 and sig["iterations"].default == 3
  assert sig["axis_name"].default is None
  sig = inspect.signature(state.kmeans).parameters
  assert {"iterations", "key"} <= set(sig)
  sig = inspect.signature(state.ema.cosine_momentum).parameters
  assert sig["base"].default == 0.996 and sig["final"].default == 1.0


def _modules():
  for info in pkgutil.walk_packages(ssljax.__path__, "ssljax."):
    yield info.name


@pytest.mark.parametrize("module_name", sorted(_modules()))
def test_docstring_examples_run(module_name):
  module = importlib.import_module(module_name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS
                                 | doctest.NORMALIZE_WHITESPACE)
  for test in finder.find(module, module_name):
    runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{result.failed} docstring example(s) failed"


# DESIGN.md's method list: every one is a factory of `ssljax.methods`.
METHODS = ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins",
           "vicreg", "dino", "swav", "sela", "deepcluster", "deepercluster",
           "pcl", "nnclr", "supcon", "dcl", "cpc", "clip", "metric",
           "rotation", "jigsaw", "relative_patch", "context_encoder",
           "colorization", "denoising_autoencoder", "exemplar", "mae", "ibot",
           "ijepa")


@pytest.mark.parametrize("name", METHODS)
def test_method_factory_contract(name):
  """Registered under its own name, exported as `methods.<name>`, keyword-
  only hyper-parameters that all have defaults a config can hold, and a
  module docstring with the paper and a runnable example."""
  from ssljax import methods  # pylint: disable=import-outside-toplevel
  factory = methods.get(name)
  assert getattr(methods, name) is factory and factory.__name__ == name
  for parameter in inspect.signature(factory).parameters.values():
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, parameter
    assert parameter.default is not inspect.Parameter.empty, parameter
  doc = inspect.getdoc(importlib.import_module(factory.__module__)) or ""
  assert ">>>" in doc and re.search(r"\b(19|20)\d\d\b", doc), name


def test_light_imports():
  """`import ssljax.losses` / `ssljax.methods` load no input pipeline (tfds,
  grain) and no TensorFlow."""
  code = ("import sys, ssljax.losses, ssljax.methods, ssljax.state; "
          "print(sorted(m for m in ('tensorflow_datasets', 'grain', "
          "'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_package_imports_another_packages_private_module():
  """`ssljax.<a>` may import `ssljax.<b>.<name>` only for a public name
  (no leading underscore) when a != b."""
  root = os.path.dirname(ssljax.__file__)
  offending = []
  for directory, _, files in os.walk(root):
    for file in files:
      if not file.endswith(".py"):
        continue
      path = os.path.join(directory, file)
      package = os.path.relpath(path, root).split(os.sep)[0]
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
          names = [node.module] + [f"{node.module}.{a.name}"
                                   for a in node.names]
        elif isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        for name in names:
          parts = name.split(".")
          if (parts[0] == "ssljax" and len(parts) > 2
              and parts[1] != package and parts[2].startswith("_")):
            offending.append(f"{path}: {name}")
  assert not offending, "\n".join(offending)
