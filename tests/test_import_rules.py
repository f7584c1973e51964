"""The import rules of WORKSPACE.md, read from the source with ast (nothing is imported), so a
rule broken by an import inside a function is caught too."""
import ast
import os

from tests.conftest import REPO
from wvd_jax import config_lib
from wvd_jax.evaluation import depth_metrics

PACKAGE = os.path.join(REPO, 'wvd_jax')
# Unit (a package, or a top-level module) -> units it must never reach, directly or through
# others. Top-level helpers (errors, files) may be used by all.
FORBIDDEN = {
    'geometry': {'config_lib', 'visualize', 'data', 'models', 'diffusion', 'training', 'tasks',
                 'evaluation', 'main'},
    'data': {'models', 'diffusion', 'training', 'tasks', 'evaluation', 'main'},
    'models': {'data', 'diffusion', 'training', 'tasks', 'evaluation', 'main'},
    'diffusion': {'data', 'training', 'tasks', 'evaluation', 'main'},
    'tasks': {'training', 'evaluation', 'main'},
    'evaluation': {'training', 'main'},
    'config_lib': {'geometry', 'data', 'models', 'diffusion', 'training', 'tasks', 'evaluation',
                   'main'},
    'training': {'tasks', 'evaluation', 'main'},
}


def _unit(module: str) -> str:
  """wvd_jax.tasks.sample -> 'tasks'; wvd_jax.config_lib -> 'config_lib'."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else 'wvd_jax'


def import_graph() -> dict[str, set[str]]:
  """Unit -> the units its modules import (any import statement, at any depth)."""
  graph = {}
  for directory, _, names in os.walk(PACKAGE):
    for name in names:
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      module = os.path.relpath(path[:-3], REPO).replace(os.sep, '.').removesuffix('.__init__')
      with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
      imported = set()
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
          imported |= {f'{node.module}.{a.name}' for a in node.names}
      unit = _unit(module)
      graph.setdefault(unit, set()).update(
          _unit(m) for m in imported if m.startswith('wvd_jax.') and _unit(m) != unit)
  return graph


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
  """Every unit reachable from ``start`` -> one import chain leading to it."""
  paths, todo = {start: [start]}, [start]
  while todo:
    unit = todo.pop()
    for nxt in sorted(graph.get(unit, ())):
      if nxt not in paths:
        paths[nxt] = paths[unit] + [nxt]
        todo.append(nxt)
  return paths


def test_import_rules_hold():
  graph = import_graph()
  assert set(FORBIDDEN) <= set(graph)
  broken = []
  for unit, forbidden in FORBIDDEN.items():
    for target, chain in reachable(graph, unit).items():
      if target in forbidden:
        broken.append(' -> '.join(chain))
  assert not broken, f'import rules broken: {broken}'


def test_the_checker_sees_a_broken_rule():
  graph = {'data': {'config_lib'}, 'config_lib': {'evaluation'}}
  assert reachable(graph, 'data')['evaluation'] == ['data', 'config_lib', 'evaluation']


def test_depth_alignments_match_depth_metrics():
  """config_lib spells the list out (it must not import evaluation): both must agree."""
  assert config_lib.DEPTH_ALIGNMENTS == tuple(m for m in depth_metrics.METHODS if m != 'none')
