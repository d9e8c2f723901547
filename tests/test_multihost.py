"""Many hosts for real on one machine: two processes (jax.distributed, CPU collectives over gloo) train and
evaluate together and end where one process with the same two-device mesh ends."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_python, xla_flags

RUN = '''
import json, sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from jaxdiff import distributed, experiments
from conftest import tiny_config
if {coordinator!r}:
  distributed.initialize({coordinator!r}, 2, {process_id})
assert jax.device_count() == 2, jax.devices()
cfg = tiny_config(**{{'data.cache_dir': {cache!r}, 'train.batch_size': 4, 'train.num_steps': 16,
                     'train.num_milestones': 3, 'eval.num_samples': 8, 'eval.features': '',
                     'model.channel_mult': (1,), 'model.attention_resolutions': ()}})
state = experiments.train(cfg, {workdir!r}).state
params = distributed.fetch(state.params)
if jax.process_index() == 0:
  np.savez({workdir!r} + '/params.npz', *[np.asarray(x) for x in jax.tree.leaves(params)])
print('DONE', jax.process_index(), jax.process_count())
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _load(workdir):
  with np.load(os.path.join(workdir, 'params.npz')) as f:
    params = [f[k] for k in sorted(f.files, key=lambda k: int(k.split('_')[1]))]
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  return params, [r for r in rows if 'f_mem' in r]


def test_two_processes_train_like_one(tmp_path):
  cache = str(tmp_path / 'cache')
  tests = os.path.join(ROOT, 'tests')
  one = str(tmp_path / 'one')
  proc = run_python(RUN.format(tests=tests, coordinator='', process_id=0, cache=cache, workdir=one), devices=2)
  assert proc.returncode == 0, proc.stderr[-3000:]

  two = str(tmp_path / 'two')
  coordinator = f'localhost:{_free_port()}'
  env = dict(os.environ, XLA_FLAGS=xla_flags(1),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  procs = [subprocess.Popen([sys.executable, '-c', RUN.format(tests=tests, coordinator=coordinator, process_id=i,
                                                              cache=cache, workdir=two)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
           for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-12000:]
  assert [o.strip().splitlines()[-1] for o, _ in outs] == ['DONE 0 2', 'DONE 1 2']

  p1, rows1 = _load(one)
  p2, rows2 = _load(two)
  for a, b in zip(p1, p2, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert [r['step'] for r in rows1] == [r['step'] for r in rows2] and rows1
  for r1, r2 in zip(rows1, rows2):
    assert (r1['f_mem'], r1['f_mem_lo'], r1['f_mem_hi']) == (r2['f_mem'], r2['f_mem_lo'], r2['f_mem_hi'])
    assert abs(r1['loss_train_t'] - r2['loss_train_t']) <= 1e-4 * abs(r1['loss_train_t'])
  # One process wrote the metrics and the figures; both wrote their part of the Orbax checkpoints.
  assert os.path.exists(os.path.join(two, 'neighbours.png'))
  assert sorted(os.listdir(os.path.join(two, 'checkpoints'))) == sorted(os.listdir(os.path.join(one, 'checkpoints')))


def test_distributed_start_up_modes(monkeypatch):
  """Explicit coordinator flags, cluster environments, and --distributed=on|off decide who starts jax.distributed."""
  import jax
  from jaxdiff import distributed
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **k: calls.append(a))
  for var in ('TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  assert not distributed.initialize() and calls == []                      # one machine, nothing asked
  assert distributed.initialize(mode='on') and calls[-1] == ()             # JAX detects the cluster (TPU VM)
  assert distributed.initialize('h:1234', 2, 1, mode='off') and calls[-1] == ('h:1234', 2, 1)
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert not distributed.initialize()                                      # a one-task SLURM job
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.initialize() and calls[-1] == ()
  assert not distributed.initialize(mode='off') and len(calls) == 3
  with pytest.raises(ValueError, match='--process_id'):
    distributed.initialize('h:1234', 2, 2)
  with pytest.raises(ValueError, match='--num_processes'):
    distributed.initialize('h:1234')
  with pytest.raises(ValueError, match='--distributed'):
    distributed.initialize(mode='yes')


def test_a_gs_workdir_gets_whole_file_writes(tmp_path, monkeypatch):
  """Metrics, summaries, config and figures go to object-store workdirs (gs://) without append or rename, for
  a run and for an ensemble member's subdirectory alike (everything writes through RunDir): under a mocked
  gs:// file system, the files equal those of a local workdir."""
  from etils.epath import testing as epath_testing
  from conftest import tiny_config
  from jaxdiff.io import figures
  from jaxdiff.io.rundir import RunDir

  bucket = tmp_path / 'bucket'
  modes = []

  def local(p):  # the mock sees every epath call: gs:// goes to the bucket folder, local paths stay
    p = os.fspath(p)
    return str(bucket / p[len('gs://'):]) if p.startswith('gs://') else p

  def fake_open(_, p, mode='r', **kw):
    if os.fspath(p).startswith('gs://'):
      modes.append(mode)
      assert 'a' not in mode, 'object stores cannot append'
    return open(local(p), mode, **{k: v for k, v in kw.items() if k == 'encoding'})

  with epath_testing.mock_epath(
      open=fake_open, exists=lambda _, p: os.path.exists(local(p)),
      mkdir=lambda _, p, *a, **k: os.makedirs(local(p), exist_ok=True),
      makedirs=lambda _, p, *a, **k: os.makedirs(local(p), exist_ok=True)):
    for workdir in ('gs://b/run', str(tmp_path / 'local')):
      run = RunDir(workdir, primary=True)
      for rundir in (run, run.member('n8_seed0')):
        w = rundir.metrics_writer(tensorboard=False)
        for step in (1, 2, 3):
          w.write_scalars(step, {'loss': 1.0 / step})
        w.close()
        w = rundir.metrics_writer(resume_step=2, tensorboard=False)   # a resumed run drops the rows after 2
        w.write_scalars(3, {'loss': 0.25})
        rundir.write_summary({'tau_gen': 1.0, 'tau_mem_fmem': float('nan')})
        rundir.write_config(tiny_config())
        figures.save_image_grid(np.zeros((4, 8, 8, 1)), rundir.file('samples.png'))
    for member in ('', 'n8_seed0'):
      gs, here = RunDir('gs://b/run').member(member), RunDir(str(tmp_path / 'local')).member(member)
      assert gs.read_metrics() == here.read_metrics()
      assert [r['step'] for r in gs.read_metrics()] == [1, 2, 3]
      assert gs.read_summary() == {'tau_gen': 1.0, 'tau_mem_fmem': None} and gs.finished
  for name in ('metrics.jsonl', 'summary.json', 'config.json', 'samples.png'):
    for member in ('', 'n8_seed0'):
      a, b = bucket / 'b' / 'run' / member / name, tmp_path / 'local' / member / name
      assert a.read_bytes() == b.read_bytes(), (member, name)
  assert modes and not any('a' in m for m in modes)
