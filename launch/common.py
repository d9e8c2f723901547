"""What a launcher runs: one `python -m jaxdiff.main` argument list per point (a single run or a sweep).

The points of a sweep come from `jaxdiff.sweep` (the config file's `sweep(arg)`, or `--point` override sets
given on the command line), so a launched sweep has the same point names, workdirs and seeds as
`python -m jaxdiff.sweep`. Flags after `--` are passed to every point; `--config.*` ones go before the
point's own overrides (the point wins), others (e.g. `--compilation_cache=`) are appended.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from jaxdiff import sweep as sweep_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class PointCommand:
  """One run: its name (the sweep point's, or 'run'), its workdir and its command line."""
  name: str
  workdir: str
  argv: tuple[str, ...]


def shell_join(argv: Sequence[str]) -> str:
  """The command line as a shell would need it typed (each argument shlex-quoted)."""
  return ' '.join(shlex.quote(a) for a in argv)


def split_extra(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(launcher arguments, extra flags for jaxdiff.main): everything after the first '--' is extra."""
  argv = list(argv)
  if '--' in argv:
    i = argv.index('--')
    return argv[:i], argv[i + 1:]
  return argv, []


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_point(spec: str) -> dict[str, Any]:
  """'data.n=8,model.width=16' -> {'data.n': 8, 'model.width': 16} (values as Python literals, else strings).

  A value that is a tuple is written in parentheses: 'model.channel_mult=(1,2)'.
  """
  out: dict[str, Any] = {}
  depth, start, parts = 0, 0, []
  for i, ch in enumerate(spec):      # split on commas outside parentheses / brackets
    depth += (ch in '([') - (ch in ')]')
    if ch == ',' and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  parts.append(spec[start:])
  for part in parts:
    key, sep, value = part.strip().partition('=')
    if not sep or not key:
      raise ValueError(f'--point {spec!r}: expected comma-separated field=value pairs, got {part!r}')
    out[key.removeprefix('--config.').removeprefix('config.')] = _literal(value)
  return out


def config_overrides(extra: Sequence[str]) -> tuple[dict[str, str], list[str]]:
  """Split extra flags into {'field': 'value'} for `--config.field=value` and the other flags."""
  overrides, others = {}, []
  for flag in extra:
    if flag.startswith('--config.') and '=' in flag:
      key, value = flag[len('--config.'):].split('=', 1)
      overrides[key] = value
    else:
      others.append(flag)
  return overrides, others


def relative_config(spec: str, repo_root: str = REPO_ROOT) -> str:
  """A config spec 'path[:arg]' with its path relative to the repository (the launched workers run from a
  copy of it); a config file outside the repository is refused."""
  path, arg = sweep_lib.split_config_path(spec)
  full = path if os.path.isabs(path) else os.path.join(repo_root, path)
  if not os.path.exists(full):
    raise ValueError(f'--config: file not found: {path!r} (paths are relative to the repository {repo_root})')
  rel = os.path.relpath(os.path.abspath(full), repo_root)
  if rel.startswith('..'):
    raise ValueError(f'--config: {path!r} is outside the repository {repo_root}; launched runs use a copy of '
                     'the repository, so put the config file in configs/')
  rel = rel.replace(os.sep, '/')
  return rel if arg is None else f'{rel}:{arg}'


def point_commands(config_spec: str, workdir: str, *, python: str, extra: Sequence[str] = (),
                   sweep: bool = False, points: Sequence[Mapping[str, Any]] = (), seeds: str = 'per_point',
                   remote_config: str | None = None, repo_root: str = REPO_ROOT) -> list[PointCommand]:
  """The runs of one launch.

  Args:
    config_spec: 'configs/X.py[:arg]' relative to the repository (loaded here for a sweep's points and seeds).
    workdir: the run's workdir; for a sweep, the sweep directory (point p runs in <workdir>/<p.name>).
    python: the interpreter on the machine that runs the commands.
    extra: flags for jaxdiff.main (after '--' on the launcher's command line).
    sweep: run the points declared by the config file's sweep(arg).
    points: explicit override sets ({'data.n': 8}, ...) instead of / in place of the declared sweep.
    remote_config: the config spec as the runner sees it (default: config_spec).
  Returns:
    one PointCommand per point; without sweep or points, a single one named 'run' in `workdir`.
  """
  spec_here = relative_config(config_spec, repo_root)
  spec_there = remote_config or spec_here
  base_overrides, other_flags = config_overrides(extra)
  if not sweep and not points:
    argv = (python, '-m', 'jaxdiff.main', f'--config={spec_there}', f'--workdir={workdir}', *extra)
    return [PointCommand('run', workdir, argv)]
  path, arg = sweep_lib.split_config_path(spec_here)
  full_spec = os.path.join(repo_root, path) + ('' if arg is None else f':{arg}')
  base, _ = sweep_lib.points_from_spec(full_spec, workdir, seeds=seeds)
  module = sweep_lib.load_config_module(os.path.join(repo_root, path))
  base_seed = int(_literal(base_overrides['seed'])) if 'seed' in base_overrides else base.seed
  overrides_list = list(points) if points else sweep_lib.declared_sweep(module, arg)
  for o in overrides_list:   # a misspelt field fails here, before anything is created or started
    sweep_lib.apply_overrides(base, {k: v for k, v in o.items() if k != 'seed'})
  pts = sweep_lib.make_points(workdir, overrides_list, base_seed, seeds=seeds)
  pts = [dataclasses.replace(p, workdir=posixpath.join(workdir, p.name)) for p in pts]
  lines = sweep_lib.commands(spec_there, pts, base_overrides=base_overrides, python=python, skip_finished=False)
  return [PointCommand(p.name, p.workdir, tuple(shlex.split(line)) + tuple(other_flags))
          for p, line in zip(pts, lines)]
