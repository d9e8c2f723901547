"""Paper 2's grammar diffusion (SPEC section 4): a uniform-transition D3PM learns sequences of a Random
Hierarchy Model; valid@k rises level by level (bottom up) and copies of training sequences start at
tau_mem ~ P.

    python -m jaxdiff.main --config=configs/rhm_d3pm.py --workdir=workdirs/rhm_d3pm          # paper 2's example
    python -m jaxdiff.main --config=configs/rhm_d3pm.py:cpu,long --workdir=workdirs/rhm_d3pm_long  # CPU sweep
    python -m jaxdiff.analysis --workdirs workdirs/rhm_d3pm_long --out workdirs/rhm_d3pm_long/analysis
    python -m jaxdiff.main --config=configs/rhm_d3pm.py:cpu --workdir=workdirs/rhm_d3pm_cpu  # shorter, smaller P

Default = paper 2's example exactly: v = 8, n_c = 8, m = 3, s = 2, L = 3 (sequences of 8 tokens, P_max =
17,496), P = P_test = 1024 distinct, disjoint sequences; T = 200, beta 1e-3 -> 0.1, KL-of-posteriors loss; the
1-D U-Net at W = 1024 (18,911,232 parameters); Adam lr 1e-4, batch 64, 10^4 epochs (160,000 steps); 30
log-spaced evaluations of 1024 samples (valid@k, exact copies with the chance level P/P_max x valid@L, the
loss in 10 windows of 20 levels on train and test). Reference (SPEC): valid@1 0.37 -> 0.97, valid@2
0.05 -> 0.89, valid@3 0 -> 0.69; copies ~0 until ~2000 epochs, 0.03 at 4096 epochs, 0.33 at 10^4. GPU work:
bench/README.md has the train step and sampler throughput at W = 1024 (CPU: far too slow for 160k steps).

`cpu`: the same grammar and diffusion at W = 128 (299,520 parameters), Adam lr 1e-3, batch 64, P in
{64, 128, 256, 512} trained as ONE vectorized ensemble (one compiled step for the four members), 20k steps, 20
log-spaced evaluations of 256 samples, 256 test sequences; tau_mem from copies is read at f_mem_lo > 0.05,
above the chance copies of a perfect generator (P/P_max <= 2.9% at P = 512). P = 512 does not copy within 20k
steps, so its fit has three points at small P, where the P-independent time to learn the top level still
weighs on tau_mem (the local slope grows with P).

`cpu,long`: the CPU sweep of paper 2's law: the same with P in {128, 256, 512, 1024} (the SPEC's CPU range,
P/P_max <= 5.9%) and 60k steps, 26 evaluations, long enough for every P to copy: about 19 minutes on the
2-core CPU. Its tau_mem per P, the fitted exponent with its intervals and the figures' paths are in
bench/README.md ("What the shipped configs measure"); the slow test `python -m pytest -m slow
tests/test_d3pm.py` runs it and checks the exponent.
"""

from jaxdiff.config import config_args, default_config

PAPER_P = 1024
CPU_P = (64, 128, 256, 512)
LONG_P = (128, 256, 512, 1024)


def _args(arg: str) -> set[str]:
  return config_args(arg, {'cpu', 'long'}, 'configs/rhm_d3pm.py')


def get_config(arg: str = ''):
  args = _args(arg)
  c = default_config()
  c.family = 'd3pm'
  g = c.d3pm.grammar
  g.v, g.n_c, g.m, g.s, g.L, g.seed, g.distinct = 8, 8, 3, 2, 3, 0, True
  c.d3pm.width = 1024
  c.d3pm.num_steps, c.d3pm.beta_min, c.d3pm.beta_max = 200, 1e-3, 0.1
  c.d3pm.ce_weight = 0.0
  c.d3pm.loss_windows = 10
  c.data.n, c.data.n_test = PAPER_P, PAPER_P
  c.optimizer.name, c.optimizer.learning_rate = 'adam', 1e-4
  c.train.batch_size = 64
  c.train.num_steps = 10_000 * PAPER_P // 64   # 10^4 epochs
  c.train.num_milestones = 30
  c.train.log_every = 1000
  c.train.steps_per_dispatch = 1000
  c.train.checkpoint_every = 10_000
  c.eval.num_samples = 1024
  c.eval.sample_batch_size = 1024
  c.eval.loss_batch_size = 1024
  c.eval.loss_noise_draws = 1
  c.eval.bootstrap_resamples = 1000
  if 'cpu' in args:
    c.d3pm.width = 128
    c.optimizer.learning_rate = 1e-3
    c.ensemble.n = CPU_P
    c.data.n_test = 256
    c.train.num_steps = 20_000
    c.train.num_milestones = 20
    c.train.steps_per_dispatch = 500
    c.train.log_every = 500
    c.train.checkpoint_every = 5000
    c.eval.num_samples = 256
    c.eval.sample_batch_size = 256
    c.eval.loss_batch_size = 256
    c.eval.f_mem_threshold = 0.05
  if 'long' in args:   # with cpu: the SPEC's P range, long enough for P = 1024 to copy
    c.ensemble.n = LONG_P
    c.train.num_steps = 60_000
    c.train.num_milestones = 26
  return c
