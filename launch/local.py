"""Run jaxdiff here (a GPU box, a workstation): one command, or the points of a sweep one after another.

    python -m launch.local --config=configs/quickstart.py --workdir=workdirs/qs [-- --config.train.num_steps=8000]
    python -m launch.local --config=configs/gmm_mlp.py:cpu,widths --sweep --workdir=workdirs/gmm_widths
    python -m launch.local --config=configs/quickstart.py --workdir=workdirs/qs_n \
        --point=data.n=8,train.batch_size=8 --point=data.n=16,train.batch_size=16 --gpus=0 --dry_run

Each point is a separate `python -m jaxdiff.main` process (so each gets the whole device set and frees it),
its output appended to `<point workdir>/launch.log`. A point whose workdir holds summary.json is skipped;
an interrupted one resumes from its checkpoints when launched again. `--gpus` sets CUDA_VISIBLE_DEVICES.
`--dry_run` prints one shell line per point and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from launch import common

LOG_FILE = 'launch.log'


def point_line(cmd: common.PointCommand, gpus: str | None = None) -> str:
  """The shell line equivalent to running `cmd` here (what --dry_run prints)."""
  env = f'CUDA_VISIBLE_DEVICES={gpus} ' if gpus is not None else ''
  log = os.path.join(cmd.workdir, LOG_FILE)
  return (f'mkdir -p {common.shell_join([cmd.workdir])} && {env}{common.shell_join(cmd.argv)} '
          f'>> {common.shell_join([log])} 2>&1')


def run_points(cmds: Sequence[common.PointCommand], *, gpus: str | None = None, log=print,
               runner=subprocess.run) -> list[dict]:
  """Run the points one after another; returns [{'name', 'status' (skipped / done / incomplete / failed),
  'returncode', 'seconds', 'log'}]. A failed point does not stop the others."""
  env = dict(os.environ)
  if gpus is not None:
    env['CUDA_VISIBLE_DEVICES'] = gpus
  results = []
  for i, c in enumerate(cmds):
    head = f'[{i + 1}/{len(cmds)}] {c.name}'
    log_path = os.path.join(c.workdir, LOG_FILE)
    if os.path.exists(os.path.join(c.workdir, 'summary.json')):
      log(f'{head}: finished, skipped')
      results.append({'name': c.name, 'status': 'skipped', 'returncode': None, 'seconds': 0.0, 'log': log_path})
      continue
    os.makedirs(c.workdir, exist_ok=True)
    log(f'{head}: {common.shell_join(c.argv)}  (log: {log_path})')
    t0 = time.time()
    with open(log_path, 'a') as f:
      rc = runner(list(c.argv), stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
      status = 'failed'
    else:
      status = 'done' if os.path.exists(os.path.join(c.workdir, 'summary.json')) else 'incomplete'
    results.append({'name': c.name, 'status': status, 'returncode': rc, 'seconds': time.time() - t0,
                    'log': log_path})
    log(f'{head}: {status} (exit code {rc}, {time.time() - t0:.1f} s)')
  return results


def main(argv: Sequence[str] | None = None) -> int:
  own, extra = common.split_extra(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog='python -m launch.local', description=__doc__.split('\n\n')[0],
                              epilog='Flags after "--" go to every `python -m jaxdiff.main` command.')
  p.add_argument('--config', required=True, help='configs/X.py[:arg], relative to the repository')
  p.add_argument('--workdir', required=True, help='the run directory (the sweep directory for a sweep)')
  p.add_argument('--sweep', action='store_true', help="run the points of the config's sweep(arg)")
  p.add_argument('--point', action='append', default=[],
                 help="a sweep point 'field=value,field=value' (repeat; instead of sweep())")
  p.add_argument('--seeds', default='per_point', choices=('per_point', 'shared'))
  p.add_argument('--gpus', default=None, help='CUDA_VISIBLE_DEVICES for the runs, e.g. 0 or 0,1')
  p.add_argument('--python', default=sys.executable or 'python', help='the interpreter that runs jaxdiff')
  p.add_argument('--dry_run', action='store_true', help='print one shell line per point, run nothing')
  args = p.parse_args(own)
  try:
    cmds = common.point_commands(args.config, args.workdir, python=args.python, extra=extra, sweep=args.sweep,
                                 points=[common.parse_point(s) for s in args.point], seeds=args.seeds)
  except ValueError as e:
    print(f'launch.local: error: {e}', file=sys.stderr)
    return 2
  if args.dry_run:
    for c in cmds:
      print(point_line(c, args.gpus))
    return 0
  results = run_points(cmds, gpus=args.gpus, log=lambda m: print(m, file=sys.stderr))
  failed = [r['name'] for r in results if r['status'] == 'failed']
  if failed:
    print(f'launch.local: failed points: {failed} (see their {LOG_FILE})', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
