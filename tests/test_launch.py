"""Launchers (launch/): the dry runs print the expected gcloud commands for a run and for a sweep, gcloud's own
parser accepts them, the remote job script runs, skips, mirrors and stops as documented, and the local
launcher runs points one after another with a log each."""

import os
import shlex
import shutil
import stat
import subprocess
import time

import pytest

from jaxdiff import sweep
from launch import common, local, tpu_vm

ROOT = common.REPO_ROOT
Z = '--zone=us-central2-b'
SCOPES = '--scopes=https://www.googleapis.com/auth/cloud-platform'
TAR = ['tar', 'czf', '/tmp/src.tgz', '--exclude=.git', '--exclude=workdirs', '--exclude=__pycache__',
       '--exclude=*.egg-info', '--exclude=.pytest_cache', '--exclude=.venv', '--exclude=venv', '--exclude=*.tar.gz',
       '-C', ROOT, '.']
INSTALL = ("rm -rf jaxdiff_src && mkdir -p jaxdiff_src && tar xzf jaxdiff_src.tar.gz -C jaxdiff_src && "
           "(python3 -m pip install -q --user uv || python3 -m pip install -q --user --break-system-packages uv) && "
           "python3 -m uv venv -q --allow-existing --python 3.12 jaxdiff_venv && "
           "python3 -m uv pip install -q --python jaxdiff_venv/bin/python -e './jaxdiff_src[gcs]' 'jax[tpu]' && "
           "jaxdiff_venv/bin/python -c 'import jax, jaxdiff; print(jax.__version__, jax.devices())'")
NOW = '$(date -u +%FT%TZ)'


def _start(job, script):
  return (f'mkdir -p jaxdiff_logs; if [ -f jaxdiff_logs/{job}.pid ] && '
          f'ps -o stat= -p $(cat jaxdiff_logs/{job}.pid) | grep -q "^[^Z]"; then '
          f'echo "jaxdiff job {job} is still running on $(hostname) (stop it with --stop)" >&2; '
          f'exit 1; fi; setsid nohup bash -c {shlex.quote(script)} >> jaxdiff_logs/{job}.log 2>&1 '
          f'< /dev/null & echo $! > jaxdiff_logs/{job}.pid')


def _dry(capsys, *argv):
  assert tpu_vm.main(['--dry_run', *argv]) == 0
  return capsys.readouterr().out.splitlines()


def test_tpu_types_and_the_cost_model():
  assert tpu_vm.tpu_type('v4-8') == tpu_vm.TpuType('v4-8', 'v4', 4, 1)
  assert tpu_vm.tpu_type('v4-32') == tpu_vm.TpuType('v4-32', 'v4', 16, 4)
  assert tpu_vm.tpu_type('v5p-8') == tpu_vm.TpuType('v5p-8', 'v5p', 4, 1)
  assert tpu_vm.tpu_type('v5litepod-8') == tpu_vm.TpuType('v5litepod-8', 'v5e', 8, 1)
  assert tpu_vm.tpu_type('v5litepod-16') == tpu_vm.TpuType('v5litepod-16', 'v5e', 16, 4)
  assert tpu_vm.tpu_type('v6e-8').hosts == 1 and tpu_vm.tpu_type('v6e-64').hosts == 16
  with pytest.raises(ValueError, match='--accelerator_type'):
    tpu_vm.tpu_type('v9-8')
  # cost = VMs x chips x hours x price per chip-hour; the table can be overridden.
  c = tpu_vm.estimate_cost('v4-32', 10, num_vms=2)
  assert c['chips'] == 16 and c['chip_hours'] == 320 and c['cost'] == pytest.approx(320 * 3.22)
  assert tpu_vm.estimate_cost('v6e-8', 2, price_per_chip_hour=1.0)['cost'] == 16.0
  assert tpu_vm.estimate_cost('v5litepod-8', 1, prices={'v5e': 0.5})['cost'] == 4.0


def test_dry_run_of_a_single_run_prints_the_gcloud_commands_in_order(capsys):
  out = _dry(capsys, '--name=qs', Z, '--accelerator_type=v4-8', '--config=configs/quickstart.py',
             '--workdir=gs://bkt/runs/qs', '--spot', '--tarball=/tmp/src.tgz', '--',
             '--config.train.num_steps=20000')
  w, url = 'jaxdiff_runs/gcs/bkt/runs/qs', 'gs://bkt/runs/qs'
  push = f'gcloud storage rsync -r --exclude=".*orbax-checkpoint-tmp.*" {w} {url}'
  script = ('cd ~; trap "STOP=1" TERM; '
            f'echo "[jaxdiff] job start {NOW} on $(hostname): 1 point(s)"; '
            f'if [ -z "$STOP" ]; then echo "[jaxdiff] point 1/1 run {NOW}"; mkdir -p {w}; '
            f'(gcloud storage rsync -r {url} {w} || true); (while sleep 600; do {push}; done) & SYNC=$!; '
            f'if [ -f {w}/summary.json ]; then echo "[jaxdiff] run: finished, skipped"; else '
            f'jaxdiff_venv/bin/python -m jaxdiff.main --config=jaxdiff_src/configs/quickstart.py --workdir={w} '
            f'--config.train.num_steps=20000; echo "[jaxdiff] run: exit code $?"; fi; kill $SYNC; {push}; fi; '
            f'echo "[jaxdiff] job end {NOW}"')
  expected = [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'qs', Z, '--format=value(state)'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'qs', Z, '--accelerator-type=v4-8',
       '--version=tpu-ubuntu2204-base', SCOPES, '--spot'],
      TAR,
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'qs', Z, '--format=value(state)'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', '/tmp/src.tgz', 'qs:jaxdiff_src.tar.gz', Z, '--worker=all'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'qs', Z, '--worker=all', f'--command={INSTALL}'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'qs', Z, '--worker=all', f'--command={_start("qs", script)}'],
  ]
  assert out == [common.shell_join(e) for e in expected]


def test_dry_run_of_a_sweep_over_two_queued_multi_host_vms(capsys):
  out = _dry(capsys, '--name=gmm', Z, '--accelerator_type=v4-32', '--queued', '--num_vms=2', '--project=proj',
             '--config=configs/gmm_mlp.py:cpu,widths', '--sweep', '--workdir=gs://bkt/sweeps/gmm',
             '--tarball=/tmp/src.tgz', '--', '--config.train.num_steps=5000')
  # The sweep's own points (names, seeds): widths 64 and 256 on VM 0, 128 on VM 1. A multi-host slice gets
  # the gs:// workdir as is, no summary.json skip (only worker 0 would see it), and --distributed=on (its
  # workers find each other through the TPU VM metadata).
  _, points = sweep.points_from_spec(os.path.join(ROOT, 'configs/gmm_mlp.py:cpu,widths'), 'gs://bkt/sweeps/gmm')
  seed = {p.name: p.seed for p in points}
  assert sorted(seed) == ['width128', 'width256', 'width64']

  def job(names):
    parts = ['cd ~', 'trap "STOP=1" TERM', f'echo "[jaxdiff] job start {NOW} on $(hostname): {len(names)} point(s)"']
    for i, n in enumerate(names):
      parts.append(
          f'if [ -z "$STOP" ]; then echo "[jaxdiff] point {i + 1}/{len(names)} {n} {NOW}"; '
          f'jaxdiff_venv/bin/python -m jaxdiff.main --config=jaxdiff_src/configs/gmm_mlp.py:cpu,widths '
          f'--workdir=gs://bkt/sweeps/gmm/{n} --config.train.num_steps=5000 --config.gmm.width={n[5:]} '
          f'--config.seed={seed[n]} --distributed=on; echo "[jaxdiff] {n}: exit code $?"; fi')
    parts.append(f'echo "[jaxdiff] job end {NOW}"')
    return '; '.join(parts)

  where = [Z, '--project=proj']
  qr = ['gcloud', 'compute', 'tpus', 'queued-resources']
  expected = []
  for vm in ('gmm-0', 'gmm-1'):
    expected += [qr + ['describe', vm, *where, '--format=value(state.state)'],
                 qr + ['create', vm, f'--node-id={vm}', *where, '--accelerator-type=v4-32',
                       '--runtime-version=tpu-ubuntu2204-base', SCOPES]]
  expected.append(TAR)
  for vm, names in (('gmm-0', ['width64', 'width256']), ('gmm-1', ['width128'])):
    expected += [qr + ['describe', vm, *where, '--format=value(state.state)'],
                 ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', '/tmp/src.tgz', f'{vm}:jaxdiff_src.tar.gz', *where,
                  '--worker=all'],
                 ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', vm, *where, '--worker=all', f'--command={INSTALL}'],
                 ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', vm, *where, '--worker=all',
                  f'--command={_start(vm, job(names))}']]
  assert out == [common.shell_join(e) for e in expected]


def test_dry_runs_of_tail_fetch_stop_delete(capsys):
  base = ['--name=sw', Z, '--num_vms=2']
  assert _dry(capsys, *base, '--tail') == [
      common.shell_join(['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', f'sw-{i}', Z, '--worker=0',
                         f'--command=tail -n 100 jaxdiff_logs/sw-{i}.log']) for i in (0, 1)]
  assert _dry(capsys, '--name=sw', Z, '--tail', '--follow', '--lines=20')[0].endswith(
      "'--command=tail -n 20 -F jaxdiff_logs/sw.log'")
  scp = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']
  assert _dry(capsys, *base, '--fetch_logs', '--fetch_dir=out') == [common.shell_join(c) for c in [
      ['mkdir', '-p', 'out/logs'],
      scp + ['sw-0:jaxdiff_logs/sw-0.log', 'out/logs/', Z, '--worker=0'],
      scp + ['sw-1:jaxdiff_logs/sw-1.log', 'out/logs/', Z, '--worker=0'],
      scp + ['sw-0:jaxdiff_runs/sw', 'out/', Z, '--worker=0', '--recurse'],
      scp + ['sw-1:jaxdiff_runs/sw', 'out/', Z, '--worker=0', '--recurse']]]
  assert _dry(capsys, '--name=sw', Z, '--fetch_logs', '--fetch_dir=out', '--workdir=gs://b/s/sw')[-1] == \
      'gcloud storage rsync -r gs://b/s/sw out/sw'
  assert _dry(capsys, '--name=sw', Z, '--stop') == [common.shell_join(
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'sw', Z, '--worker=all',
       '--command=if [ -f jaxdiff_logs/sw.pid ]; then kill -TERM -- -$(cat jaxdiff_logs/sw.pid) || true; fi'])]
  assert _dry(capsys, *base, '--delete', '--queued')[1] == \
      'gcloud compute tpus queued-resources delete sw-1 --zone=us-central2-b --force --quiet'
  assert _dry(capsys, '--name=sw', Z, '--delete') == [
      'gcloud compute tpus tpu-vm delete sw --zone=us-central2-b --quiet']


def test_bad_launches_fail_before_anything_runs(capsys):
  for argv, match in [
      (['--name=Bad_Name', Z, '--accelerator_type=v4-8', '--config=configs/quickstart.py'], '--name'),
      (['--name=a', Z, '--accelerator_type=v4-7', '--config=configs/quickstart.py'], 'TensorCores'),
      (['--name=a', Z, '--accelerator_type=v4-8', '--config=configs/nope.py'], 'file not found'),
      (['--name=a', Z, '--accelerator_type=v4-8', '--config=configs/quickstart.py', '--point=data.nn=3'],
       "unknown config field 'data.nn'"),
      (['--name=a', Z, '--accelerator_type=v4-8', '--config=configs/quickstart.py', '--workdir=gs://bucket'],
       'folder inside the bucket'),
      (['--name=a', Z, '--accelerator_type=v4-8', '--config=configs/quickstart.py', '--num_vms=2'],
       'only 1 point'),
  ]:
    assert tpu_vm.main(['--dry_run', *argv]) == 2
    assert match in capsys.readouterr().err
  assert common.parse_point('data.n=8,model.channel_mult=(1,2),optimizer.name=adam') == {
      'data.n': 8, 'model.channel_mult': (1, 2), 'optimizer.name': 'adam'}


@pytest.mark.skipif(shutil.which('gcloud') is None, reason='gcloud is not installed')
def test_gcloud_parses_every_command_of_the_dry_runs(capsys, tmp_path):
  """gcloud exits 2 ("unrecognized arguments") on a bad flag before it needs credentials; with an empty
  configuration every well-formed command stops at the missing account instead. No network is used."""
  lines = []
  for argv in (['--name=qs', Z, '--accelerator_type=v5litepod-8', '--config=configs/quickstart.py', '--spot',
                '--workdir=gs://b/r/qs'],
               ['--name=qs', Z, '--accelerator_type=v6e-16', '--queued', '--config=configs/quickstart.py'],
               ['--name=qs', Z, '--tail', '--follow'], ['--name=qs', Z, '--fetch_logs', '--workdir=gs://b/r/qs'],
               ['--name=qs', Z, '--fetch_logs'], ['--name=qs', Z, '--stop'], ['--name=qs', Z, '--delete'],
               ['--name=qs', Z, '--delete', '--queued']):
    lines += [line for line in _dry(capsys, *argv) if line.startswith('gcloud ')]
  shapes = {}
  for line in lines:   # one command per distinct (subcommand, flags) shape: each gcloud start costs ~1-2 s
    argv = shlex.split(line)
    shapes.setdefault(tuple(a.split('=')[0] for a in argv if a.startswith('-') or a.isalpha()), argv)
  env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'), CLOUDSDK_CORE_PROJECT='proj',
             CLOUDSDK_CORE_DISABLE_PROMPTS='1')
  procs = [(argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
           for argv in shapes.values()]
  assert len(procs) >= 9
  for argv, proc in procs:
    _, err = proc.communicate(timeout=120)
    assert 'unrecognized arguments' not in err and proc.returncode != 2, (argv, err)
    assert 'active account' in err, (argv, err)


def _executable(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


# A stand-in for `python -m jaxdiff.main`: logs its arguments, optionally sleeps (checkpointing on SIGTERM, as
# jaxdiff does), then writes <workdir>/summary.json like a finished run; exits 3 if FAKE_FAIL is in the workdir.
FAKE_PYTHON = '''#!/bin/bash
for a in "$@"; do case $a in --workdir=*) W=${a#--workdir=};; esac; done
echo "fake python $*"
if [ -n "$FAKE_FAIL" ] && [[ "$W" == *"$FAKE_FAIL"* ]]; then exit 3; fi
if [ -n "$FAKE_SLEEP" ]; then
  trap 'echo "fake python: SIGTERM, checkpoint saved"; exit 0' TERM
  sleep "$FAKE_SLEEP" & wait $!
fi
mkdir -p "$W" && echo '{}' > "$W/summary.json"
'''


def _wait_for(path, text, timeout=30):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if os.path.exists(path) and text in open(path).read():
      return open(path).read()
    time.sleep(0.1)
  raise AssertionError(f'{text!r} not in {path} after {timeout}s: {open(path).read() if os.path.exists(path) else ""}')


def test_remote_job_runs_points_mirrors_skips_finished_refuses_doubles_and_stops_on_sigterm(tmp_path):
  home = tmp_path / 'home'
  (home / 'jaxdiff_venv' / 'bin').mkdir(parents=True)
  (tmp_path / 'bin').mkdir()
  _executable(home / 'jaxdiff_venv' / 'bin' / 'python', FAKE_PYTHON)
  _executable(tmp_path / 'bin' / 'gcloud', '#!/bin/bash\necho "gcloud $*" >> "$HOME/gcloud.log"\n')
  env = dict(os.environ, HOME=str(home), PATH=f'{tmp_path / "bin"}:{os.environ["PATH"]}')
  env.pop('FAKE_SLEEP', None)

  def pts(*names):
    return [common.PointCommand(n, f'jaxdiff_runs/sw/{n}', (tpu_vm.REMOTE_PYTHON, '-m', 'jaxdiff.main',
                                                            '--config=c.py', f'--workdir=jaxdiff_runs/sw/{n}'))
            for n in names]

  def start(job, points, urls=None, **kw):
    script = tpu_vm.job_script(points, urls, sync_every=1)
    return subprocess.run(['bash', '-c', tpu_vm.start_script(job, script)], env={**env, **kw}, cwd=home,
                          capture_output=True, text=True, timeout=30)

  log = str(home / 'jaxdiff_logs' / 'j.log')
  assert start('j', pts('a', 'b'), ['gs://b/sw/a', 'gs://b/sw/b']).returncode == 0
  text = _wait_for(log, 'job end')
  assert text.index('point 1/2 a') < text.index('a: exit code 0') < text.index('point 2/2 b')
  assert (home / 'jaxdiff_runs/sw/a/summary.json').exists() and (home / 'jaxdiff_runs/sw/b/summary.json').exists()
  calls = (home / 'gcloud.log').read_text().splitlines()
  restore, push = 'gcloud storage rsync -r gs://b/sw/a jaxdiff_runs/sw/a', \
      'gcloud storage rsync -r --exclude=.*orbax-checkpoint-tmp.* jaxdiff_runs/sw/a gs://b/sw/a'
  assert calls.index(restore) < calls.index(push)      # restored before, mirrored after

  assert start('j', pts('a', 'b')).returncode == 0     # launched again: both finished, skipped
  assert _wait_for(log, 'b: finished, skipped').count('fake python') == 2

  log2 = str(home / 'jaxdiff_logs' / 'k.log')
  assert start('k', pts('c', 'd'), ['gs://b/sw/c', None], FAKE_SLEEP='60').returncode == 0
  _wait_for(log2, 'fake python')
  again = start('k', pts('c', 'd'), FAKE_SLEEP='60')
  assert again.returncode == 1 and 'still running' in again.stderr
  t0 = time.time()
  assert subprocess.run(['bash', '-c', tpu_vm.stop_script('k')], env=env, cwd=home).returncode == 0
  text = _wait_for(log2, 'job end', timeout=20)
  assert time.time() - t0 < 15
  assert 'SIGTERM, checkpoint saved' in text and 'point 2/2' not in text      # d never started
  assert not (home / 'jaxdiff_runs/sw/c/summary.json').exists()
  assert (home / 'gcloud.log').read_text().splitlines()[-1].endswith('jaxdiff_runs/sw/c gs://b/sw/c')


def test_local_launcher_runs_points_in_order_with_a_log_each(tmp_path, capsys):
  fake = _executable(tmp_path / 'python', FAKE_PYTHON)
  wd = str(tmp_path / 'sw')
  argv = ['--config=configs/quickstart.py', f'--workdir={wd}', '--point=data.n=8,train.batch_size=8',
          '--point=data.n=16,train.batch_size=16', f'--python={fake}', '--gpus=0', '--',
          '--config.train.num_steps=100']
  assert local.main(['--dry_run', *argv]) == 0
  from configs import quickstart
  pts = sweep.make_points(wd, [{'data.n': 8, 'train.batch_size': 8}, {'data.n': 16, 'train.batch_size': 16}],
                          quickstart.get_config().seed)
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
      f'mkdir -p {p.workdir} && CUDA_VISIBLE_DEVICES=0 {fake} -m jaxdiff.main --config=configs/quickstart.py '
      f'--workdir={p.workdir} --config.train.num_steps=100 --config.data.n={n} --config.train.batch_size={n} '
      f'--config.seed={p.seed} >> {p.workdir}/launch.log 2>&1' for p, n in zip(pts, (8, 16))]
  os.environ['FAKE_FAIL'] = 'n16'
  try:
    assert local.main(argv) == 1                       # the second point fails; the first still ran
  finally:
    del os.environ['FAKE_FAIL']
  err = capsys.readouterr().err
  assert '[1/2] n8_batch_size8: done' in err and '[2/2] n16_batch_size16: failed (exit code 3' in err
  assert 'fake python -m jaxdiff.main' in open(os.path.join(wd, 'n8_batch_size8', 'launch.log')).read()
  assert local.main(argv) == 0                         # again: the finished point is skipped, the other runs
  err = capsys.readouterr().err
  assert 'n8_batch_size8: finished, skipped' in err and 'n16_batch_size16: done' in err


def test_execute_reuses_a_ready_vm_recreates_a_preempted_one_and_waits_until_ready():
  launch = tpu_vm.Launch(name='sw', zone='us-central2-b', accelerator_type='v4-8', num_vms=2, queued=True,
                         config='configs/quickstart.py', points=({'data.n': 8}, {'data.n': 16}), tarball='/tmp/src.tgz')
  steps = tpu_vm.run_plan(launch)
  states = {'sw-0': ['ACTIVE', 'ACTIVE'], 'sw-1': ['SUSPENDED', 'WAITING_FOR_RESOURCES', 'PROVISIONING', 'ACTIVE']}
  ran = []

  def runner(argv, capture_output=False, text=False, check=False):
    ran.append(' '.join(argv[3:6]) if argv[0] == 'gcloud' else argv[0])
    if argv[4] == 'describe':
      return subprocess.CompletedProcess(argv, 0, stdout=states[argv[5]].pop(0) + '\n', stderr='')
    return subprocess.CompletedProcess(argv, 0, stdout='', stderr='')

  tpu_vm.execute(steps, launch, poll_seconds=0, runner=runner, log=lambda m: None)
  assert ran[:6] == ['queued-resources describe sw-0',                     # ACTIVE: reused, not created
                     'queued-resources describe sw-1',                     # SUSPENDED: deleted, created again
                     'queued-resources delete sw-1', 'queued-resources create sw-1',
                     'tar',                                                # the source tarball
                     'queued-resources describe sw-0']
  assert ran.count('queued-resources describe sw-1') == 4                 # polled until ACTIVE
  assert ran[-1] == 'tpu-vm ssh sw-1' and not any(states.values())
