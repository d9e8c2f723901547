"""The README stays true: its Layout section names every module of the tree and nothing that is gone, and every
`--config=FILE[:arg]` it mentions loads and validates."""

import os
import re

from conftest import ROOT
from jaxdiff import config as config_lib
from jaxdiff import sweep

README = open(os.path.join(ROOT, 'README.md')).read()


def _layout_paths() -> set[str]:
  block = README.split('## Layout', 1)[1].split('```')[1]
  return {line.split()[0] for line in block.strip().splitlines() if line.strip()}


def test_layout_section_lists_every_module_and_nothing_else():
  listed = _layout_paths()
  modules = set()
  for root, _, files in os.walk(os.path.join(ROOT, 'jaxdiff')):
    rel = os.path.relpath(root, ROOT)
    if rel.startswith(os.path.join('jaxdiff', 'analysis')):
      continue   # one line for the package
    modules |= {os.path.join(rel, f) for f in files if f.endswith('.py') and f != '__init__.py'}
  modules |= {'jaxdiff/experiments/__init__.py', 'jaxdiff/evaluators/__init__.py'}   # the two registries
  assert modules - listed == set(), 'modules missing from the README Layout'
  stale = {p for p in listed if p.startswith('jaxdiff/') and not os.path.exists(os.path.join(ROOT, p))}
  assert stale == set(), 'README Layout names paths that do not exist'


def test_every_config_the_readme_mentions_loads_and_validates():
  specs = sorted(set(re.findall(r'--config=(configs/[a-z]\w*\.py(?::[\w,]+)?)', README)))   # not placeholders
  assert len(specs) >= 5, specs
  for spec in specs:
    path, arg = sweep.split_config_path(spec)
    module = sweep.load_config_module(os.path.join(ROOT, path))
    config = module.get_config(arg) if arg else module.get_config()
    config_lib.validate(config)
