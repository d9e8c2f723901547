"""Sweeps: one config, many points, each with its own workdir and seed; run locally or handed to a launcher.

    python -m jaxdiff.sweep --config=configs/gmm_mlp.py --sweep_dir=workdirs/gmm_sweep
    python -m jaxdiff.sweep --config=configs/gmm_mlp.py:cpu --sweep_dir=DIR --config.train.num_steps=1000
    python -m jaxdiff.sweep --config=configs/gmm_mlp.py --sweep_dir=DIR --mode=commands   # one line per point

A config file declares its sweep the ml_collections way, next to `get_config(arg)`:

    def sweep(arg=''):            # optional argument: the same string as get_config's
      return product({'gmm.width': [16, 32, 64]})      # [{'gmm.width': 16}, {'gmm.width': 32}, ...]

Each point is a dict of dotted config fields to override. Its name is built from the fields it sets
(`width32`), its workdir is `<sweep_dir>/<name>` and its seed is the base seed plus a hash of the name (stable
when points are added or reordered) unless the point sets `seed` itself. `--config.*` flags change the base
config of every point.

The local runner executes the points one after another in this process. A point whose workdir holds
`summary.json` (written when a run completes) is skipped; any other point is (re)started, and the run resumes
from its own checkpoints (every family checkpoints into its workdir), so an interrupted sweep continues
where it stopped. `commands(...)` yields the equivalent `python -m jaxdiff.main ...` command of each point
instead, for a cluster launcher or `xargs -P`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import json
import os
import re
import shlex
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from jaxdiff import analysis, experiments
from jaxdiff.io.rundir import RunDir

SWEEP_FILE = 'sweep.json'


@dataclasses.dataclass(frozen=True)
class Point:
  name: str
  overrides: dict[str, Any]     # dotted field -> value (without 'seed')
  seed: int
  workdir: str


def product(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The grid of all combinations: product({'a': [1, 2], 'b': [3]}) -> [{'a': 1, 'b': 3}, {'a': 2, 'b': 3}]."""
  keys = list(axes)
  for k in keys:
    if isinstance(axes[k], (str, bytes)) or not isinstance(axes[k], Sequence) or not axes[k]:
      raise ValueError(f'sweep axis {k!r} must be a non-empty list of values, got {axes[k]!r}')
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def split_config_path(spec: str) -> tuple[str, str | None]:
  """'configs/x.py:arg' -> ('configs/x.py', 'arg'); 'configs/x.py' -> ('configs/x.py', None)."""
  path, sep, arg = spec.partition(':')
  if sep and not path.endswith('.py'):   # a ':' inside the path itself
    path, sep, arg = spec.rpartition(':')
  return path, (arg if sep else None)


def load_config_module(path: str):
  if not os.path.exists(path):
    raise ValueError(f'config file not found: {path!r}')
  name = 'jaxdiff_sweep_config_' + re.sub(r'\W', '_', os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'config file {path!r} defines no get_config()')
  return module


def _call_with_arg(fn: Callable, arg: str | None, what: str):
  params = inspect.signature(fn).parameters
  if arg is None:
    return fn()
  if not params:
    raise ValueError(f'{what} takes no argument, but the config was given ":{arg}"')
  return fn(arg)


def declared_sweep(module, arg: str | None) -> list[dict[str, Any]]:
  """The override dicts of the config module's `sweep(arg)` ([{}]: a single point, if it has none)."""
  if not hasattr(module, 'sweep'):
    return [{}]
  points = list(_call_with_arg(module.sweep, arg, 'sweep()'))
  if not points:
    raise ValueError('the config file\'s sweep() returned no points')
  for i, p in enumerate(points):
    if not isinstance(p, Mapping):
      raise ValueError(f'sweep() point {i} must be a dict of dotted config fields, got {p!r}')
  return [dict(p) for p in points]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields set; an unknown field raises ValueError naming it."""
  c = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    for i, part in enumerate(path):
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ValueError(f'sweep point sets unknown config field {key!r} (no group {".".join(path[:i + 1])!r})')
      node = node[part]
    if last not in node:
      raise ValueError(f'sweep point sets unknown config field {key!r}')
    node[last] = tuple(value) if isinstance(value, list) else value
  return c


def _slug(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '-'.join(_slug(v) for v in value)
  if isinstance(value, float):
    value = f'{value:g}'
  return re.sub(r'[^A-Za-z0-9.+-]+', '-', str(value)).strip('-') or 'x'


def point_name(overrides: Mapping[str, Any], *, full_keys: bool = False) -> str:
  """'width32_n128-256' from {'gmm.width': 32, 'gmm.n': (128, 256)} (last key component + value)."""
  if not overrides:
    return 'base'
  parts = []
  for key, value in overrides.items():
    label = key.replace('.', '-') if full_keys else key.rsplit('.', 1)[-1]
    parts.append(f'{label}{_slug(value)}')
  return '_'.join(parts)


def make_points(sweep_dir: str, overrides_list: Sequence[Mapping[str, Any]], base_seed: int,
                *, seeds: str = 'per_point') -> list[Point]:
  """Points with unique names, workdirs under sweep_dir and seeds.

  seeds: 'per_point' (base seed + crc32(name) % 10007: different data and initialisations per point) or
  'shared' (every point uses the base seed). A point that sets 'seed' keeps it.
  """
  if seeds not in ('per_point', 'shared'):
    raise ValueError(f"seeds must be 'per_point' or 'shared', got {seeds!r}")
  names = [point_name(o) for o in overrides_list]
  if len(set(names)) < len(names):
    names = [point_name(o, full_keys=True) for o in overrides_list]
  if len(set(names)) < len(names):
    names = [f'p{i:03d}_{n}' for i, n in enumerate(names)]
  points = []
  for name, o in zip(names, overrides_list):
    o = dict(o)
    if 'seed' in o:
      seed = int(o.pop('seed'))
    else:
      seed = base_seed + (zlib.crc32(name.encode()) % 10007 if seeds == 'per_point' else 0)
    points.append(Point(name=name, overrides=o, seed=seed, workdir=os.path.join(sweep_dir, name)))
  return points


def point_config(base: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  c = apply_overrides(base, point.overrides)
  c.seed = point.seed
  return c


def is_finished(workdir: str) -> bool:
  """A run writes summary.json when it completes."""
  return RunDir(workdir, primary=False).finished


def run_config(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Run one config in this process through the table of experiments, as `jaxdiff.main` does."""
  result = experiments.train(config, workdir)
  if experiments.wants_report(config, result):
    analysis.report([workdir], os.path.join(workdir, 'analysis'))
  return result


def write_manifest(sweep_dir: str, config_spec: str, base_overrides: Mapping[str, Any],
                   points: Sequence[Point]) -> str:
  """`<sweep_dir>/sweep.json`: the config, the base overrides and every point (name, overrides, seed)."""
  manifest = {'config': config_spec, 'base_overrides': dict(base_overrides),
              'points': [{'name': p.name, 'overrides': p.overrides, 'seed': p.seed, 'workdir': p.workdir}
                         for p in points]}
  return RunDir(sweep_dir, primary=True).write_json(SWEEP_FILE, manifest)


def run_local(base: ml_collections.ConfigDict, points: Sequence[Point], *,
              run_fn: Callable[[ml_collections.ConfigDict, str], Any] = run_config,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Run the points one after another: finished ones (summary.json) are skipped, others (re)started, and
  each run resumes from its own checkpoints. Returns [{'name', 'status', 'seconds'}] with status 'skipped',
  'done' or 'incomplete' (the run returned without writing summary.json). Exceptions propagate (the next
  invocation resumes)."""
  results = []
  for i, p in enumerate(points):
    if is_finished(p.workdir):
      log(f'[{i + 1}/{len(points)}] {p.name}: finished, skipped')
      results.append({'name': p.name, 'status': 'skipped', 'seconds': 0.0})
      continue
    started = os.path.isdir(p.workdir)
    log(f'[{i + 1}/{len(points)}] {p.name}: {"resuming" if started else "starting"} in {p.workdir} '
        f'(seed {p.seed}, {p.overrides})')
    t0 = time.time()
    run_fn(point_config(base, p), p.workdir)
    status = 'done' if is_finished(p.workdir) else 'incomplete'
    results.append({'name': p.name, 'status': status, 'seconds': time.time() - t0})
    log(f'[{i + 1}/{len(points)}] {p.name}: {status} ({time.time() - t0:.1f}s)')
  return results


def _flag_value(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(_flag_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return repr(value) if isinstance(value, float) else str(value)


def commands(config_spec: str, points: Iterable[Point], *, base_overrides: Mapping[str, Any] | None = None,
             python: str = sys.executable or 'python', skip_finished: bool = True) -> Iterator[str]:
  """The launcher hook: one shell command per (unfinished) point, `python -m jaxdiff.main ...`."""
  for p in points:
    if skip_finished and is_finished(p.workdir):
      continue
    args = [python, '-m', 'jaxdiff.main', f'--config={config_spec}', f'--workdir={p.workdir}']
    fields = {**(base_overrides or {}), **p.overrides, 'seed': p.seed}
    args += [f'--config.{k}={_flag_value(v)}' for k, v in fields.items()]
    yield ' '.join(shlex.quote(a) for a in args)


def points_from_spec(config_spec: str, sweep_dir: str, base: ml_collections.ConfigDict | None = None, *,
                     seeds: str = 'per_point') -> tuple[ml_collections.ConfigDict, list[Point]]:
  """(base config, points) of a config file spec 'path[:arg]' (base: an already loaded get_config(arg),
  e.g. with command-line overrides)."""
  path, arg = split_config_path(config_spec)
  module = load_config_module(path)
  if base is None:
    base = _call_with_arg(module.get_config, arg, 'get_config()')
  return base, make_points(sweep_dir, declared_sweep(module, arg), base.seed, seeds=seeds)


def main(argv):
  del argv
  flag = flags.FLAGS['config']
  spec = config_flags.get_config_filename(flag)
  base_overrides = config_flags.get_override_values(flag)
  base, points = points_from_spec(spec, _SWEEP_DIR.value, flags.FLAGS.config, seeds=_SEEDS.value)
  if _ONLY.value:
    wanted = set(_ONLY.value)
    unknown = wanted - {p.name for p in points}
    if unknown:
      raise ValueError(f'--only names unknown points {sorted(unknown)}; the points are {[p.name for p in points]}')
    points = [p for p in points if p.name in wanted]
  if _MODE.value == 'list':
    for p in points:
      print(f'{p.name}\tseed={p.seed}\t{"finished" if is_finished(p.workdir) else "pending"}\t{p.overrides}')
    return
  write_manifest(_SWEEP_DIR.value, spec, base_overrides, points)
  if _MODE.value == 'commands':
    for cmd in commands(spec, points, base_overrides=base_overrides):
      print(cmd)
    return
  for p in points:   # fail on a bad point before running any
    point_config(base, p)
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser('~/.cache/jaxdiff/xla'))
  results = run_local(base, points)
  print(json.dumps(results, indent=1))


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]) declaring sweep().',
                                  lock_config=False)
  _SWEEP_DIR = flags.DEFINE_string('sweep_dir', None, 'Directory of the sweep (one workdir per point).')
  _MODE = flags.DEFINE_enum('mode', 'run', ['run', 'commands', 'list'],
                            "'run': run unfinished points here, one after another; 'commands': print one "
                            "`python -m jaxdiff.main` command per unfinished point; 'list': show the points.")
  _SEEDS = flags.DEFINE_enum('seeds', 'per_point', ['per_point', 'shared'],
                             "'per_point': base seed + hash of the point name; 'shared': the base seed.")
  _ONLY = flags.DEFINE_list('only', [], 'Run only these point names.')
  flags.mark_flags_as_required(['config', 'sweep_dir'])
  app.run(main)
