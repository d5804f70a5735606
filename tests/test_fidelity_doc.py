"""docs/fidelity.md covers every method: a section per registered method
that names the commit read and its remaining differences, a row in the
summary table, and a link from each config's docstring. Text only."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "fidelity.md")
CONFIGS = os.path.join(ROOT, "configs")
METHOD_MODULES = os.path.join(ROOT, "ssljax", "methods")

# The registered methods, in the document's family order. A new method must
# be added here, with its section and its summary row.
METHODS = (
    "simclr", "dcl", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins",
    "vicreg", "nnclr", "supcon", "swav", "dino", "clip", "cpc", "metric",
    "deepcluster", "deepercluster", "sela", "pcl", "rotation", "jigsaw",
    "relative_patch", "context_encoder", "colorization",
    "denoising_autoencoder", "exemplar", "mae", "ibot", "ijepa")

SHA = re.compile(r"`[0-9a-f]{7,40}`")
NO_CODE = "Official code: none released"


def _doc() -> str:
  with open(DOC, encoding="utf-8") as f:
    return f.read()


def _sections() -> dict:
  """`## <name>` heading -> the text up to the next `## ` heading."""
  parts = re.split(r"^## (.+)$", _doc(), flags=re.M)
  return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _summary_rows() -> dict:
  """Method -> the cells of its summary-table row."""
  rows = {}
  for line in _sections()["Summary"].splitlines():
    match = re.match(r"\|\s*\[(\w+)\]\(#(\w+)\)\s*\|(.*)\|\s*$", line)
    if match:
      assert match.group(1) == match.group(2), line
      rows[match.group(1)] = [c.strip() for c in match.group(3).split("|")]
  return rows


def _remaining(section: str) -> str:
  """The part of a section from its "Remaining differences" on."""
  return section[section.index("Remaining differences"):]


def test_the_method_list_is_the_configs():
  names = sorted(f[:-3] for f in os.listdir(CONFIGS)
                 if f.endswith(".py") and f not in ("common.py",
                                                    "__init__.py"))
  assert names == sorted(METHODS)


def test_sections_follow_the_family_order():
  headings = [h for h in _sections() if h in METHODS]
  assert headings == list(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_has_a_section_with_its_commit_and_differences(name):
  sections = _sections()
  assert name in sections, f"no `## {name}` in docs/fidelity.md"
  section = sections[name]
  assert "Read:" in section
  assert SHA.search(section) or NO_CODE in section, (
      f"{name}: the section names no commit and does not say that no code "
      "was released")
  assert re.search(r"^Remaining differences", section, flags=re.M) or (
      "no remaining differences" in section.lower()), name


@pytest.mark.parametrize("name", METHODS)
def test_each_method_has_a_summary_row_with_the_sections_count(name):
  rows = _summary_rows()
  assert name in rows, f"no summary row for {name}"
  source, count, switches = rows[name]
  section = _sections()[name]
  assert source and switches
  for sha in re.findall(r"`([0-9a-f]{7,40})`", source):
    assert re.search(rf"`{sha}[0-9a-f]*`", section), (name, sha)
  bullets = [line for line in _remaining(section).splitlines()
             if line.startswith("* ")]
  assert int(count) == len(bullets), name


def test_the_summary_has_no_extra_rows():
  assert set(_summary_rows()) == set(METHODS)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("folder", [CONFIGS, METHOD_MODULES])
def test_each_config_and_method_docstring_links_its_section(name, folder):
  with open(os.path.join(folder, f"{name}.py"), encoding="utf-8") as f:
    docstring = ast.get_docstring(ast.parse(f.read())) or ""
  assert f"docs/fidelity.md#{name}" in docstring


def test_internal_links_reach_a_heading():
  """Every `](#anchor)` names a heading, by GitHub's anchor rule."""
  text = _doc()
  anchors = set()
  for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    anchors.add(anchor.replace(" ", "-"))
  for link in re.findall(r"\]\(#([^)]+)\)", text):
    assert link in anchors, link
