"""Paper 1's Gaussian-mixture experiment (appendix; SPEC section 2): tau_gen independent of n, tau_mem ~ n,
tau_mem ~ 1/W, for data 1/2 N(mu, I) + 1/2 N(-mu, I), mu = ones(8), and a residual MLP score model.

    python -m jaxdiff.main --config=configs/gmm_mlp.py --workdir=workdirs/gmm            # paper: SGD
    python -m jaxdiff.main --config=configs/gmm_mlp.py:adam --workdir=workdirs/gmm_adam  # Adam 6e-4
    python -m jaxdiff.main --config=configs/gmm_mlp.py:cfg --workdir=workdirs/gmm_cfg    # class-conditional
    python -m jaxdiff.main --config=configs/gmm_mlp.py:cpu --workdir=workdirs/gmm_cpu    # 2-core CPU
    python -m jaxdiff.sweep --config=configs/gmm_mlp.py:cpu,widths --sweep_dir=workdirs/gmm_widths  # tau ~ 1/W

Arguments (comma-separated): `adam`, `cfg` (classifier-free guidance, w = 1), `cpu` (the small sweep below),
`jaxdiff` (jaxdiff's own protocol instead of the authors'), `widths` (declares a sweep over W, one point per
width, each an ensemble over n).

The default is paper 1's protocol, as the authors' code has it (github.com/tbonnair/Why-Diffusion-Models-
Don-t-Memorize, Experiments/src: run_GMM.py, TinyModels.py, GMM_data_scores.py, Diffusion.py):
- training times: the linear DDPM schedule (T = 1000, betas 1e-4 -> 0.02), steps uniform in 1..999
  (`gmm.schedule='ddpm'`), eps-MSE;
- network: `SimpleTimeModel`, Linear(8, W), 3 post-LayerNorm blocks LN(h + Linear(GELU(Linear(h + e(k))))) with
  the fixed sinusoidal encoding e of the integer step k added in every block, Linear(W, 8): 400,648
  parameters at W = 256 (`gmm.network='post_ln'`), PyTorch's initialization (`gmm.init='torch'`);
- data: exactly n/2 points in each component (`gmm.balanced`), mu = ones(8), unit variance;
- full-batch SGD lr 6e-3 with momentum 0.95 (Adam 6e-4), 4M steps (the authors' N_EPOCHS);
- `--config.gmm.fixed_t=T` trains at one diffusion time (the authors' `-t` fixed-time mode).
What differs: the random numbers (JAX's generator), the sampler (Euler-Maruyama with 1000 steps on the OU
times of the schedule's steps, SPEC section 2) and the evaluation (jaxdiff's evaluators at 30 milestones).
`jaxdiff` instead trains 1M steps in continuous OU time drawn log-uniformly in [1e-3, 5] with jaxdiff's pre-LayerNorm
SiLU MLP and its learned time MLP (730k parameters at W = 256), Flax's initialization and a random split of
the components.

One run trains every n of `gmm.n` (x `gmm.num_seeds`) as one vectorized ensemble (jaxdiff/train/steps.py):
full-batch gradient descent on training sets padded to the largest n, one compiled step for all members.
Each member gets `<workdir>/n<n>_seed<s>/` (metrics.jsonl: f_mem with its 95% bootstrap interval, loss at
t = 0.01 on the training and test points, KL(generated || true), sliced Wasserstein; summary.json:
tau_gen, tau_mem); `<workdir>/summary.json` holds the fit tau_mem = c n^alpha, `<workdir>/analysis/` the
tables and figures (tau against n, the collapse of f_mem / f_mem(end) against tau / n, ...).

Cost (bench/README.md):
- default (paper: n = 128 ... 4096, W = 256, full batch, SGD lr 6e-3 momentum 0.95, 4M steps, 30 milestones
  of 1000 Euler-Maruyama samples with 1000 steps, KL on 1000 flow samples): GPU/TPU work. On one H200 eight
  such members (n up to 4096, padded) of jaxdiff's network trained at ~420 ensemble steps/s, so 4M steps
  take ~3 hours plus the evaluations (an estimate from 1M steps; not yet run end to end).
- `cpu` (n = 32 ... 256, W = 64, full batch, SGD lr 0.1 momentum 0.95, 12k steps, 40 milestones of 256
  samples with 200 Euler-Maruyama steps, no KL, tau_gen from the score error), with jaxdiff's protocol (it
  implies `jaxdiff`: its learning rate and length were chosen, and its numbers recorded, with that protocol):
  ~4 minutes on a 2-core CPU;
  the `cpu,widths` sweep 4, 7 and 17 minutes for W = 64, 128, 256. bench/README.md has the tau_mem per n and
  the fitted exponents of a recorded run (also the slow test in tests/test_gmm.py).
"""

from jaxdiff.config import config_args, default_config
from jaxdiff.sweep import product

PAPER_N = (128, 256, 512, 1024, 2048, 4096)
WIDTHS = (64, 128, 256)


def _args(arg: str) -> set[str]:
  return config_args(arg, {'adam', 'cfg', 'cpu', 'jaxdiff', 'widths'}, 'configs/gmm_mlp.py')


def get_config(arg: str = ''):
  args = _args(arg)
  c = default_config()
  c.family = 'gmm'
  g = c.gmm
  g.d = 8
  g.mu_scale = 1.0
  g.n = PAPER_N
  g.width = 256
  g.num_blocks = 3
  g.t_min, g.t_max = 1e-3, 5.0
  g.sample_steps = 1000
  g.kl_samples = 1000
  g.kl_steps = 200
  g.quality = 'kl'
  c.eval.num_samples = 1000
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 6e-3
  c.optimizer.momentum = 0.95
  c.train.batch_size = max(g.n)          # full batch for every member
  c.train.num_steps = 4_000_000
  c.train.num_milestones = 30
  c.train.log_every = 1000
  c.train.steps_per_dispatch = 1000      # the SIGTERM check and the host sync every 1000 steps
  c.train.checkpoint_every = 20_000
  # tau_mem from the absolute loss gap at t = 0.01 (eps-MSE per coordinate, ~1 before memorization): the
  # first ~50 steps show a transient gap of ~0.1-0.2 at every n; memorization drives it to ~10.
  c.eval.loss_gap_relative = False
  c.eval.loss_gap_threshold = 0.5
  # Paper 1's protocol (docstring).
  g.schedule = 'ddpm'
  g.network = 'post_ln'
  g.init = 'torch'
  g.balanced = True
  if 'jaxdiff' in args or 'cpu' in args:
    g.schedule, g.network, g.init, g.balanced = 'ou', 'pre_ln', 'flax', False
    c.train.num_steps = 1_000_000
  if 'adam' in args:
    c.optimizer.name = 'adam'
    c.optimizer.learning_rate = 6e-4
  if 'cpu' in args:
    g.n = (32, 64, 128, 256)
    g.width = 64
    g.sample_steps = 200
    g.kl_samples = 0
    g.quality = 'score_err'   # tau_gen from the population score-matching error (no sampling noise)
    c.eval.num_samples = 256
    c.optimizer.learning_rate = 0.1 if c.optimizer.name == 'sgd' else 1e-3
    c.train.batch_size = max(g.n)
    c.train.num_steps = 12_000
    c.train.num_milestones = 40
    c.train.log_every = 500
    c.train.checkpoint_every = 2000
  if 'cfg' in args:
    g.conditional = True
    g.label_dropout = 0.1
    g.guidance = 1.0
  return c


def sweep(arg: str = ''):
  """Points of `python -m jaxdiff.sweep`: one per width with `widths`, else the single base point."""
  if 'widths' in _args(arg):
    return product({'gmm.width': list(WIDTHS)})
  return [{}]
