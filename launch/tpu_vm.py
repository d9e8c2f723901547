"""Run jaxdiff on Cloud TPU VMs: create or reuse the VM, install on every worker, start, tail, fetch, delete.

    python -m launch.tpu_vm --name=qs --zone=us-central2-b --accelerator_type=v4-8 \
        --config=configs/quickstart.py --workdir=gs://BUCKET/runs/qs [--spot] [--queued] [--dry_run] \
        [-- --config.train.num_steps=20000]
    python -m launch.tpu_vm --name=qs --zone=us-central2-b --tail          # last lines of the run's log
    python -m launch.tpu_vm --name=qs --zone=us-central2-b --workdir=gs://BUCKET/runs/qs --fetch_logs
    python -m launch.tpu_vm --name=qs --zone=us-central2-b --delete
    python -m launch.tpu_vm --accelerator_type=v4-32 --hours=10 --cost    # chips x hours x price

A sweep (`--sweep`: the config's sweep(arg), or `--point=field=value,...` repeated) is spread over
`--num_vms` VMs (NAME-0, NAME-1, ...; point j on VM j mod num_vms); each VM runs its points one after
another, skipping those whose workdir holds summary.json. Every worker of a VM runs the same command (SPMD;
`jax.distributed` connects the workers of a multi-host slice), detached with setsid + nohup, its output in
`~/jaxdiff_logs/<vm>.log` on each worker, so it survives the ssh session.

A `gs://` workdir on a single-host slice is mirrored: the run writes to a local directory on the VM,
restored from the bucket before it starts (a recreated Spot VM resumes) and copied to the bucket every
`--sync_every` seconds and at the end. On a multi-host slice (whose processes must share one checkpoint
directory) the gs:// path is given to jaxdiff as is (`--gcs_mode`).

Every command is built by a pure function returning an argument list; `--dry_run` prints them in order, one
per line (shlex-quoted), for a VM that does not exist yet, and runs nothing. Nothing here has run against
the real Cloud TPU API from this repository's CI: the commands are checked by dry runs and by gcloud's own
argument parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from launch import common

GCLOUD = 'gcloud'
# Remote layout, relative to the home directory of the ssh user on every worker.
REMOTE_SRC = 'jaxdiff_src'
REMOTE_VENV = 'jaxdiff_venv'
REMOTE_PYTHON = f'{REMOTE_VENV}/bin/python'
REMOTE_RUNS = 'jaxdiff_runs'
REMOTE_LOGS = 'jaxdiff_logs'
REMOTE_TARBALL = 'jaxdiff_src.tar.gz'
PYTHON_VERSION = '3.12'     # jax >= 0.10 needs Python >= 3.11; the TPU images ship 3.10, uv brings its own
CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform'   # gcloud storage from the VM
PACK_EXCLUDES = ('.git', 'workdirs', '__pycache__', '*.egg-info', '.pytest_cache', '.venv', 'venv',
                 '*.tar.gz')
# Checkpoints being written must not be mirrored half-done.
SYNC_EXCLUDE = r'.*orbax-checkpoint-tmp.*'

# TPU software versions for JAX (cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {'v4': 'tpu-ubuntu2204-base', 'v5e': 'v2-alpha-tpuv5-lite', 'v5p': 'v2-alpha-tpuv5',
                    'v6e': 'v2-alpha-tpuv6e'}
# EXAMPLE on-demand list prices in USD per chip-hour (us-central regions); check
# https://cloud.google.com/tpu/pricing for your region, Spot / committed-use rates, and pass your own with
# --price_per_chip_hour or estimate_cost(prices=...).
PRICES_PER_CHIP_HOUR = {'v4': 3.22, 'v5e': 1.20, 'v5p': 4.20, 'v6e': 2.70}

READY_STATES = {'READY', 'ACTIVE'}
DEAD_STATES = {'PREEMPTED', 'TERMINATED', 'STOPPED', 'SUSPENDED', 'SUSPENDING', 'FAILED'}


# ----------------------------------------------------------------------------------------------------------
# TPU types and cost


@dataclasses.dataclass(frozen=True)
class TpuType:
  accelerator_type: str
  family: str       # 'v4', 'v5e', 'v5p', 'v6e'
  chips: int
  hosts: int        # VMs (workers) of the slice; > 1: a multi-host slice


def tpu_type(accelerator_type: str) -> TpuType:
  """Chips and hosts of an accelerator type ('v4-32', 'v5p-8', 'v5litepod-16', 'v6e-8').

  v4 and v5p names count TensorCores (2 per chip), v5e (v5litepod) and v6e names count chips. A host holds
  4 chips (v4, v5p, and v5e / v6e slices larger than 8 chips) or up to 8 (v5e / v6e slices of <= 8 chips).
  """
  m = re.fullmatch(r'(v4|v5p|v5litepod|v6e)-(\d+)', accelerator_type or '')
  if not m or int(m.group(2)) < 1:
    raise ValueError(f'--accelerator_type: unknown TPU type {accelerator_type!r}; expected one of v4-N, v5p-N, '
                     f'v5litepod-N, v6e-N (e.g. v4-8, v5litepod-8, v6e-8, v4-32)')
  name, count = m.group(1), int(m.group(2))
  if name in ('v4', 'v5p'):
    if count % 2:
      raise ValueError(f'--accelerator_type: {accelerator_type!r} must count TensorCores, an even number (v4-8 = '
                       '4 chips)')
    chips = count // 2
    hosts = max(1, chips // 4)
  else:
    chips = count
    hosts = 1 if chips <= 8 else chips // 4
  return TpuType(accelerator_type, 'v5e' if name == 'v5litepod' else name, chips, hosts)


def estimate_cost(accelerator_type: str, hours: float, *, num_vms: int = 1,
                  price_per_chip_hour: float | None = None,
                  prices: Mapping[str, float] | None = None) -> dict[str, Any]:
  """cost = num_vms x chips x hours x price per chip-hour.

  The price is `price_per_chip_hour` if given, else `prices[family]` (default PRICES_PER_CHIP_HOUR: example
  on-demand list prices to check against cloud.google.com/tpu/pricing). Billing runs while a VM exists
  (READY), so `hours` should include set-up and idle time, not only training.
  Returns {'accelerator_type', 'family', 'chips', 'hosts', 'num_vms', 'hours', 'chip_hours',
  'price_per_chip_hour', 'cost'}.
  """
  t = tpu_type(accelerator_type)
  if hours < 0 or num_vms < 1:
    raise ValueError(f'estimate_cost: need hours >= 0 and num_vms >= 1, got {hours}, {num_vms}')
  table = PRICES_PER_CHIP_HOUR if prices is None else prices
  price = price_per_chip_hour if price_per_chip_hour is not None else table.get(t.family)
  if price is None:
    raise ValueError(f'estimate_cost: no price for {t.family!r}; pass price_per_chip_hour')
  chip_hours = num_vms * t.chips * hours
  return {'accelerator_type': accelerator_type, 'family': t.family, 'chips': t.chips, 'hosts': t.hosts,
          'num_vms': num_vms, 'hours': hours, 'chip_hours': chip_hours, 'price_per_chip_hour': price,
          'cost': chip_hours * price}


def format_cost(c: Mapping[str, Any]) -> str:
  return (f"{c['num_vms']} VM(s) x {c['chips']} chips ({c['accelerator_type']}) x {c['hours']:g} h x "
          f"${c['price_per_chip_hour']:.2f}/chip-hour = ${c['cost']:,.2f} (example price: check "
          'cloud.google.com/tpu/pricing)')


# ----------------------------------------------------------------------------------------------------------
# gcloud commands (pure)


@dataclasses.dataclass(frozen=True)
class Tpu:
  """One TPU VM (or queued resource of one node, named like the node)."""
  name: str
  zone: str
  accelerator_type: str | None = None
  runtime_version: str | None = None   # default: RUNTIME_VERSIONS[family]
  project: str | None = None
  spot: bool = False
  queued: bool = False

  @property
  def version(self) -> str:
    if self.runtime_version:
      return self.runtime_version
    if not self.accelerator_type:
      raise ValueError('--accelerator_type is needed to create a TPU VM')
    return RUNTIME_VERSIONS[tpu_type(self.accelerator_type).family]


def _where(tpu: Tpu) -> list[str]:
  return [f'--zone={tpu.zone}'] + ([f'--project={tpu.project}'] if tpu.project else [])


def describe_command(tpu: Tpu) -> list[str]:
  """Prints the state (READY / ACTIVE / ...); fails if the VM (queued resource) does not exist."""
  if tpu.queued:
    return [GCLOUD, 'compute', 'tpus', 'queued-resources', 'describe', tpu.name, *_where(tpu),
            '--format=value(state.state)']
  return [GCLOUD, 'compute', 'tpus', 'tpu-vm', 'describe', tpu.name, *_where(tpu), '--format=value(state)']


def create_command(tpu: Tpu) -> list[str]:
  if not tpu.accelerator_type:
    raise ValueError('--accelerator_type is needed to create a TPU VM')
  tpu_type(tpu.accelerator_type)
  if tpu.queued:
    cmd = [GCLOUD, 'compute', 'tpus', 'queued-resources', 'create', tpu.name, f'--node-id={tpu.name}',
           *_where(tpu), f'--accelerator-type={tpu.accelerator_type}', f'--runtime-version={tpu.version}']
  else:
    cmd = [GCLOUD, 'compute', 'tpus', 'tpu-vm', 'create', tpu.name, *_where(tpu),
           f'--accelerator-type={tpu.accelerator_type}', f'--version={tpu.version}']
  cmd.append(f'--scopes={CLOUD_PLATFORM_SCOPE}')
  if tpu.spot:
    cmd.append('--spot')
  return cmd


def delete_command(tpu: Tpu) -> list[str]:
  if tpu.queued:   # --force deletes the node with the request
    return [GCLOUD, 'compute', 'tpus', 'queued-resources', 'delete', tpu.name, *_where(tpu), '--force', '--quiet']
  return [GCLOUD, 'compute', 'tpus', 'tpu-vm', 'delete', tpu.name, *_where(tpu), '--quiet']


def ssh_command(tpu: Tpu, remote: str, worker: str = 'all') -> list[str]:
  """Run the shell command `remote` on the worker(s) (from the home directory)."""
  return [GCLOUD, 'compute', 'tpus', 'tpu-vm', 'ssh', tpu.name, *_where(tpu), f'--worker={worker}',
          f'--command={remote}']


def scp_command(tpu: Tpu, sources: Sequence[str], dest: str, *, worker: str = 'all',
                recurse: bool = False) -> list[str]:
  """Copy files; a remote path is written 'NAME:path' (relative to the home directory)."""
  return [GCLOUD, 'compute', 'tpus', 'tpu-vm', 'scp', *sources, dest, *_where(tpu), f'--worker={worker}',
          *(['--recurse'] if recurse else [])]


def pack_command(repo_root: str, tarball: str) -> list[str]:
  """A tarball of the working tree (uncommitted changes included; .git and workdirs left out)."""
  return ['tar', 'czf', tarball, *(f'--exclude={e}' for e in PACK_EXCLUDES), '-C', repo_root, '.']


def install_script(*, git_url: str | None = None, git_ref: str | None = None,
                   python_version: str = PYTHON_VERSION) -> str:
  """Shell (one line) that puts the source in ~/jaxdiff_src and installs it with jax[tpu] into a venv.

  Source: the copied tarball, or a clone of `git_url` at `git_ref`. uv provides a Python >= 3.11 (the TPU
  images ship 3.10) and installs faster than pip.
  """
  if git_url:
    source = [f'rm -rf {REMOTE_SRC}', f'git clone -q {shlex.quote(git_url)} {REMOTE_SRC}']
    if git_ref:
      source.append(f'git -C {REMOTE_SRC} checkout -q {shlex.quote(git_ref)}')
  else:
    source = [f'rm -rf {REMOTE_SRC}', f'mkdir -p {REMOTE_SRC}', f'tar xzf {REMOTE_TARBALL} -C {REMOTE_SRC}']
  uv = ('(python3 -m pip install -q --user uv || python3 -m pip install -q --user --break-system-packages uv)')
  steps = source + [
      uv,
      f'python3 -m uv venv -q --allow-existing --python {shlex.quote(python_version)} {REMOTE_VENV}',
      # [gcs]: gcsfs, so that jaxdiff writes gs:// workdirs itself (multi-host slices; TPU VMs have no TF).
      f"python3 -m uv pip install -q --python {REMOTE_PYTHON} -e './{REMOTE_SRC}[gcs]' 'jax[tpu]'",
      f"{REMOTE_PYTHON} -c 'import jax, jaxdiff; print(jax.__version__, jax.devices())'",
  ]
  return ' && '.join(steps)


def job_script(points: Sequence[common.PointCommand], gcs_urls: Sequence[str | None] | None = None, *,
               sync_every: int = 600, skip_finished: bool = True) -> str:
  """Shell (one line) that runs the points one after another from the home directory.

  skip_finished: a point whose workdir holds summary.json is skipped (only for single-host slices: on a
  multi-host slice only worker 0 holds summary.json, and every worker must start every run). gcs_urls[i]:
  mirror point i's (local) workdir to this gs:// URL: restore before, copy every `sync_every` s and at the
  end. SIGTERM (--stop) lets the current run checkpoint and exit (jaxdiff handles it), mirrors, and skips
  the remaining points.
  """
  gcs_urls = list(gcs_urls) if gcs_urls is not None else [None] * len(points)
  if len(gcs_urls) != len(points):
    raise ValueError(f'job_script: {len(points)} points but {len(gcs_urls)} gcs urls')
  now = '$(date -u +%FT%TZ)'
  parts = ['cd ~', 'trap "STOP=1" TERM', f'echo "[jaxdiff] job start {now} on $(hostname): {len(points)} point(s)"']
  for i, (p, url) in enumerate(zip(points, gcs_urls)):
    w = shlex.quote(p.workdir)
    body = [f'echo "[jaxdiff] point {i + 1}/{len(points)} {p.name} {now}"']
    if url:
      u = shlex.quote(url)
      push = f'gcloud storage rsync -r --exclude="{SYNC_EXCLUDE}" {w} {u}'
      body += [f'mkdir -p {w}', f'(gcloud storage rsync -r {u} {w} || true)',
               f'(while sleep {int(sync_every)}; do {push}; done) & SYNC=$!']
    run = f'{common.shell_join(p.argv)}; echo "[jaxdiff] {p.name}: exit code $?"'
    if skip_finished:
      run = f'if [ -f {w}/summary.json ]; then echo "[jaxdiff] {p.name}: finished, skipped"; else {run}; fi'
    body.append(run)
    if url:
      body += ['kill $SYNC', push]
    parts.append('if [ -z "$STOP" ]; then ' + '; '.join(body) + '; fi')
  parts.append(f'echo "[jaxdiff] job end {now}"')
  return '; '.join(parts)


def start_script(job: str, script: str) -> str:
  """Shell (one line) that starts `script` detached (setsid + nohup, its own process group, output appended
  to ~/jaxdiff_logs/<job>.log, pid in <job>.pid) unless that job's script is still running (a zombie, left
  where nothing reaps orphans, does not count)."""
  log, pid = f'{REMOTE_LOGS}/{job}.log', f'{REMOTE_LOGS}/{job}.pid'
  return (f'mkdir -p {REMOTE_LOGS}; '
          f'if [ -f {pid} ] && ps -o stat= -p $(cat {pid}) | grep -q "^[^Z]"; then '
          f'echo "jaxdiff job {job} is still running on $(hostname) (stop it with --stop)" >&2; exit 1; fi; '
          f'setsid nohup bash -c {shlex.quote(script)} >> {log} 2>&1 < /dev/null & echo $! > {pid}')


def stop_script(job: str) -> str:
  """SIGTERM to the job's process group: the run checkpoints and exits, the job mirrors and stops."""
  pid = f'{REMOTE_LOGS}/{job}.pid'
  return f'if [ -f {pid} ]; then kill -TERM -- -$(cat {pid}) || true; fi'


def tail_script(job: str, lines: int = 100, follow: bool = False) -> str:
  return f'tail -n {int(lines)}{" -F" if follow else ""} {REMOTE_LOGS}/{job}.log'


# ----------------------------------------------------------------------------------------------------------
# Plans: the ordered steps of an action


@dataclasses.dataclass(frozen=True)
class Step:
  """A command of a plan. kind: 'run' (must succeed); 'probe' (describe: does the VM exist, in which state);
  'create' (skipped when the probe found a usable VM); 'wait' (describe again until READY / ACTIVE)."""
  argv: tuple[str, ...]
  kind: str = 'run'
  vm: str | None = None


def vm_names(name: str, num_vms: int) -> list[str]:
  if not re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', name or ''):
    raise ValueError(f'--name: {name!r} is not a valid TPU name (lowercase letters, digits and hyphens, starting '
                     'with a letter)')
  if num_vms < 1:
    raise ValueError(f'--num_vms must be >= 1, got {num_vms}')
  return [name] if num_vms == 1 else [f'{name}-{i}' for i in range(num_vms)]


def remote_workdir(workdir: str | None, name: str, *, multi_host: bool, gcs_mode: str = 'auto'
                   ) -> tuple[str, str | None]:
  """(workdir the runs write to on the workers, gs:// URL it is mirrored to or None).

  None -> ~/jaxdiff_runs/<name>. 'gs://b/p' -> mirrored from ~/jaxdiff_runs/gcs/b/p (gcs_mode 'mirror', or
  'auto' on a single-host slice) or passed as is ('direct', or 'auto' on a multi-host slice). A local path
  is relative to the home directory on the workers ('~/' is dropped) unless absolute.
  """
  if gcs_mode not in ('auto', 'mirror', 'direct'):
    raise ValueError(f"--gcs_mode must be 'auto', 'mirror' or 'direct', got {gcs_mode!r}")
  if not workdir:
    return f'{REMOTE_RUNS}/{name}', None
  if workdir.startswith('gs://'):
    path = workdir[len('gs://'):].strip('/')
    if not path or '/' not in path:
      raise ValueError(f'--workdir: give a folder inside the bucket, e.g. gs://BUCKET/runs/{name}, got {workdir!r}')
    url = 'gs://' + path
    if gcs_mode == 'direct' or (gcs_mode == 'auto' and multi_host):
      return url, None
    return f'{REMOTE_RUNS}/gcs/{path}', url
  if workdir.startswith('~/'):
    workdir = workdir[2:]
  return workdir.rstrip('/') or '.', None


@dataclasses.dataclass(frozen=True)
class Launch:
  """Everything a plan needs (the parsed command line)."""
  name: str
  zone: str
  accelerator_type: str | None = None
  project: str | None = None
  runtime_version: str | None = None
  spot: bool = False
  queued: bool = False
  num_vms: int = 1
  config: str | None = None
  workdir: str | None = None
  gcs_mode: str = 'auto'
  sweep: bool = False
  points: tuple[Mapping[str, Any], ...] = ()
  seeds: str = 'per_point'
  extra: tuple[str, ...] = ()
  git_url: str | None = None
  git_ref: str | None = None
  python_version: str = PYTHON_VERSION
  sync_every: int = 600
  skip_install: bool = False
  tarball: str = os.path.join(tempfile.gettempdir(), 'jaxdiff_src.tar.gz')
  repo_root: str = common.REPO_ROOT

  def tpus(self) -> list[Tpu]:
    return [Tpu(n, self.zone, self.accelerator_type, self.runtime_version, self.project, self.spot, self.queued)
            for n in vm_names(self.name, self.num_vms)]

  @property
  def multi_host(self) -> bool:
    return bool(self.accelerator_type) and tpu_type(self.accelerator_type).hosts > 1

  def workdirs(self) -> tuple[str, str | None]:
    return remote_workdir(self.workdir, self.name, multi_host=self.multi_host, gcs_mode=self.gcs_mode)


def assign_points(points: Sequence[Any], num_vms: int) -> list[list[Any]]:
  """Point j goes to VM j mod num_vms (each VM gets a share of every part of the sweep's order)."""
  return [list(points[i::num_vms]) for i in range(num_vms)]


def run_plan(launch: Launch) -> list[Step]:
  """Create or reuse every VM, copy and install the package on all workers, start each VM's points."""
  if not launch.config:
    raise ValueError('--config is needed to start a run')
  tpus = launch.tpus()
  workdir, url = launch.workdirs()
  # A multi-host slice: every worker starts jax.distributed, JAX finding the others through the VM metadata.
  extra = (*launch.extra, '--distributed=on') if launch.multi_host else tuple(launch.extra)
  cmds = common.point_commands(launch.config, workdir, python=REMOTE_PYTHON, extra=extra,
                               sweep=launch.sweep, points=launch.points, seeds=launch.seeds,
                               remote_config=f'{REMOTE_SRC}/{common.relative_config(launch.config, launch.repo_root)}',
                               repo_root=launch.repo_root)
  if len(cmds) < launch.num_vms:
    raise ValueError(f'--num_vms={launch.num_vms} but the launch has only {len(cmds)} point(s)')
  per_vm = assign_points(cmds, launch.num_vms)
  steps: list[Step] = []
  for t in tpus:
    steps += [Step(tuple(describe_command(t)), 'probe', t.name), Step(tuple(create_command(t)), 'create', t.name)]
  if not launch.skip_install and not launch.git_url:
    steps.append(Step(tuple(pack_command(launch.repo_root, launch.tarball))))
  for t, mine in zip(tpus, per_vm):
    steps.append(Step(tuple(describe_command(t)), 'wait', t.name))
    if not launch.skip_install:
      if not launch.git_url:
        steps.append(Step(tuple(scp_command(t, [launch.tarball], f'{t.name}:{REMOTE_TARBALL}'))))
      steps.append(Step(tuple(ssh_command(t, install_script(git_url=launch.git_url, git_ref=launch.git_ref,
                                                            python_version=launch.python_version)))))
    urls = None
    if url:
      urls = [url if p.name == 'run' and len(cmds) == 1 else f'{url}/{p.name}' for p in mine]
    script = job_script(mine, urls, sync_every=launch.sync_every, skip_finished=not launch.multi_host)
    steps.append(Step(tuple(ssh_command(t, start_script(t.name, script)))))
  return steps


def tail_plan(launch: Launch, *, lines: int = 100, follow: bool = False, worker: str = '0') -> list[Step]:
  tpus = launch.tpus()
  if follow and len(tpus) > 1:
    raise ValueError('--follow follows one log: use it with --num_vms=1 (or --name=NAME-i)')
  return [Step(tuple(ssh_command(t, tail_script(t.name, lines, follow), worker=worker))) for t in tpus]


def fetch_plan(launch: Launch, local_dir: str, *, worker: str = '0') -> list[Step]:
  """Copy the jobs' logs (from `worker`) and the runs' workdirs into local_dir: logs/<vm>.log and
  <basename of the workdir>/ (from the bucket when the workdir is on Cloud Storage)."""
  tpus = launch.tpus()
  workdir, url = launch.workdirs()
  logs = os.path.join(local_dir, 'logs')
  steps = [Step(('mkdir', '-p', logs))]
  steps += [Step(tuple(scp_command(t, [f'{t.name}:{REMOTE_LOGS}/{t.name}.log'], logs + '/', worker=worker)))
            for t in tpus]
  source = url or (workdir if workdir.startswith('gs://') else None)
  if source:
    steps.append(Step((GCLOUD, 'storage', 'rsync', '-r', source,
                       os.path.join(local_dir, source.rstrip('/').rsplit('/', 1)[-1]))))
  else:
    steps += [Step(tuple(scp_command(t, [f'{t.name}:{workdir}'], local_dir + '/', worker=worker, recurse=True)))
              for t in tpus]
  return steps


def stop_plan(launch: Launch) -> list[Step]:
  return [Step(tuple(ssh_command(t, stop_script(t.name)))) for t in launch.tpus()]


def delete_plan(launch: Launch) -> list[Step]:
  return [Step(tuple(delete_command(t)), vm=t.name) for t in launch.tpus()]


# ----------------------------------------------------------------------------------------------------------
# Execution


def _state(result: subprocess.CompletedProcess) -> str:
  return (result.stdout or '').strip().splitlines()[-1].strip() if (result.stdout or '').strip() else ''


def execute(steps: Sequence[Step], launch: Launch | None = None, *, wait_minutes: float = 120,
            poll_seconds: float = 30, runner=subprocess.run, log=print) -> None:
  """Run the steps in order: a probe that finds a usable VM skips its create; a VM found PREEMPTED /
  SUSPENDED / FAILED is deleted and created again; a wait polls until READY (ACTIVE for a queued resource)."""
  by_name = {t.name: t for t in launch.tpus()} if launch is not None else {}
  usable: dict[str, bool] = {}
  for step in steps:
    if step.kind == 'probe':
      res = runner(list(step.argv), capture_output=True, text=True)
      state = _state(res) if res.returncode == 0 else ''
      if res.returncode == 0 and state in DEAD_STATES:
        log(f'{step.vm}: found in state {state}; deleting it to create it again')
        runner(delete_command(by_name[step.vm]), check=True)
        usable[step.vm] = False
      else:
        usable[step.vm] = res.returncode == 0
        if usable[step.vm]:
          log(f'{step.vm}: exists ({state or "state unknown"}), reusing it')
      continue
    if step.kind == 'create' and usable.get(step.vm):
      continue
    if step.kind == 'wait':
      deadline = time.time() + 60 * wait_minutes
      while True:
        res = runner(list(step.argv), capture_output=True, text=True)
        state = _state(res)
        if res.returncode == 0 and state in READY_STATES:
          break
        if res.returncode == 0 and state in DEAD_STATES:
          raise RuntimeError(f'{step.vm}: state {state} (delete it with --delete and launch again)')
        if time.time() > deadline:
          raise RuntimeError(f'{step.vm}: not ready after {wait_minutes} minutes (last state {state!r}, '
                             f'{(res.stderr or "").strip()[-300:]})')
        log(f'{step.vm}: {state or "not visible yet"}, waiting')
        time.sleep(poll_seconds)
      continue
    log('+ ' + common.shell_join(step.argv))
    if step.argv[:2] == ('mkdir', '-p'):
      os.makedirs(step.argv[2], exist_ok=True)
      continue
    runner(list(step.argv), check=True)


# ----------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m launch.tpu_vm', description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='Flags after "--" go to every `python -m jaxdiff.main` command.')
  p.add_argument('--name', help='TPU VM name (NAME-0 ... NAME-k with --num_vms > 1)')
  p.add_argument('--zone', help='e.g. us-central2-b (v4); which zone has which TPU: '
                 'cloud.google.com/tpu/docs/regions-zones')
  p.add_argument('--project', default=None, help='Google Cloud project (default: gcloud config)')
  p.add_argument('--accelerator_type', default=None, help='v4-8, v4-32, v5litepod-8, v5p-8, v6e-8, ...')
  p.add_argument('--runtime_version', default=None, help='TPU software version (default: by TPU family)')
  p.add_argument('--queued', action='store_true', help='request the VM as a queued resource')
  p.add_argument('--spot', action='store_true', help='Spot VM (cheaper, preemptible: use a gs:// workdir)')
  p.add_argument('--num_vms', type=int, default=1, help='VMs to spread the sweep points over')
  p.add_argument('--config', default=None, help='configs/X.py[:arg], relative to the repository')
  p.add_argument('--workdir', default=None, help='gs://BUCKET/path or a path on the VM (default '
                 f'~/{REMOTE_RUNS}/NAME); for a sweep, the sweep directory')
  p.add_argument('--gcs_mode', default='auto', choices=('auto', 'mirror', 'direct'),
                 help='gs:// workdir: mirror a local directory (auto: single-host) or pass it to jaxdiff '
                 '(auto: multi-host)')
  p.add_argument('--sweep', action='store_true', help="run the points of the config's sweep(arg)")
  p.add_argument('--point', action='append', default=[],
                 help="a sweep point 'field=value,field=value' (repeat; instead of sweep())")
  p.add_argument('--seeds', default='per_point', choices=('per_point', 'shared'))
  p.add_argument('--git_url', default=None, help='install by cloning this repository instead of copying the '
                 'working tree')
  p.add_argument('--git_ref', default=None, help='branch, tag or commit of --git_url')
  p.add_argument('--python_version', default=PYTHON_VERSION)
  p.add_argument('--sync_every', type=int, default=600, help='seconds between copies to the gs:// workdir')
  p.add_argument('--skip_install', action='store_true', help='the VM already has this code installed')
  p.add_argument('--tarball', default=os.path.join(tempfile.gettempdir(), 'jaxdiff_src.tar.gz'),
                 help='local path of the source tarball')
  p.add_argument('--dry_run', action='store_true', help='print the commands, one per line, run nothing')
  p.add_argument('--wait_minutes', type=float, default=120, help='how long to wait for a VM to be ready')
  actions = p.add_mutually_exclusive_group()
  actions.add_argument('--tail', action='store_true', help="print the end of each VM's job log (worker 0)")
  actions.add_argument('--fetch_logs', action='store_true', help='copy the logs and the run directories here')
  actions.add_argument('--stop', action='store_true', help='SIGTERM the jobs: checkpoint, mirror and exit')
  actions.add_argument('--delete', action='store_true', help='delete the VMs (queued resources)')
  actions.add_argument('--cost', action='store_true', help='print the cost estimate for --hours and exit')
  p.add_argument('--lines', type=int, default=100, help='--tail: lines to show')
  p.add_argument('--follow', action='store_true', help='--tail: keep following the log')
  p.add_argument('--worker', default='0', help='--tail / --fetch_logs: which worker')
  p.add_argument('--fetch_dir', default=None, help='--fetch_logs: local directory (default workdirs/tpu/NAME)')
  p.add_argument('--hours', type=float, default=None, help='expected hours per VM, for the cost estimate')
  p.add_argument('--price_per_chip_hour', type=float, default=None, help='override the example price table')
  return p


def main(argv: Sequence[str] | None = None) -> int:
  own, extra = common.split_extra(sys.argv[1:] if argv is None else argv)
  args = _parser().parse_args(own)
  try:
    if args.cost:
      if args.hours is None or not args.accelerator_type:
        raise ValueError('--cost needs --accelerator_type and --hours')
      print(format_cost(estimate_cost(args.accelerator_type, args.hours, num_vms=args.num_vms,
                                      price_per_chip_hour=args.price_per_chip_hour)))
      return 0
    if not args.name or not args.zone:
      raise ValueError('--name and --zone are required')
    launch = Launch(name=args.name, zone=args.zone, accelerator_type=args.accelerator_type, project=args.project,
                    runtime_version=args.runtime_version, spot=args.spot, queued=args.queued,
                    num_vms=args.num_vms, config=args.config, workdir=args.workdir, gcs_mode=args.gcs_mode,
                    sweep=args.sweep, points=tuple(common.parse_point(s) for s in args.point),
                    seeds=args.seeds, extra=tuple(extra), git_url=args.git_url, git_ref=args.git_ref,
                    python_version=args.python_version, sync_every=args.sync_every,
                    skip_install=args.skip_install, tarball=args.tarball)
    if args.tail:
      steps = tail_plan(launch, lines=args.lines, follow=args.follow, worker=args.worker)
    elif args.fetch_logs:
      steps = fetch_plan(launch, args.fetch_dir or os.path.join('workdirs', 'tpu', args.name), worker=args.worker)
    elif args.stop:
      steps = stop_plan(launch)
    elif args.delete:
      steps = delete_plan(launch)
    else:
      if not args.accelerator_type:
        raise ValueError('--accelerator_type is needed to start a run (the VM may have to be created)')
      steps = run_plan(launch)
      if args.hours is not None:
        print('estimated cost: ' + format_cost(estimate_cost(args.accelerator_type, args.hours,
                                                             num_vms=args.num_vms,
                                                             price_per_chip_hour=args.price_per_chip_hour)),
              file=sys.stderr)
  except ValueError as e:
    print(f'launch.tpu_vm: error: {e}', file=sys.stderr)
    return 2
  if args.dry_run:
    for s in steps:
      print(common.shell_join(s.argv))
    return 0
  try:
    execute(steps, launch, wait_minutes=args.wait_minutes, log=lambda m: print(m, file=sys.stderr))
  except (subprocess.CalledProcessError, RuntimeError, FileNotFoundError) as e:
    print(f'launch.tpu_vm: failed: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
