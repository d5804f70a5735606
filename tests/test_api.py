"""The public API contract of DESIGN.md: names, signatures and docstrings."""

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import ssljax
from ssljax import losses, state

# name -> keyword defaults fixed by DESIGN.md's contract table.
LOSS_CONTRACT = {
    "nt_xent": {"temperature": 0.5, "axis_name": None},
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
    "nt_xent": ["z1", "z2"], "info_nce": ["query", "positive", "negatives"],
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
