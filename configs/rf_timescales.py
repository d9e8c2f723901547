"""Paper 1, random-features losses (SPEC section 3): L_train, L_test, L_gen and E_score against training time
for psi_p = 64, psi_n in {4, 8, 16, 32}, t = 0.1, and their collapse against tau / tau_mem.

    python -m jaxdiff.main --config=configs/rf_timescales.py --workdir=workdirs/rf_timescales
    python -m jaxdiff.main --config=configs/rf_timescales.py:paper --workdir=workdirs/rf_timescales_d100

Exact gradient flow (closed form in the eigenbasis of U, 200 times in [0.1, 1e6] of jaxdiff's time
tau = k eta / d^2; metrics.jsonl also has the authors' axis tau_authors = k eta = tau d / psi_p, and
--config.rf.time_axis=authors draws the figures on it); summary.json records tau_mem per psi_n and
`tau_mem_exponent`, the fitted slope of log tau_mem against log psi_n. tau_mem is psi_p / (2 Delta_t lambda_min)
(paper 1's psi_p / (Delta_t lambda_min) with the 2 of the flow exp(-2 Delta_t lambda tau / psi_p)), lambda_min
the lower edge of the memorization bulk, measured on each realized U (`measured`), beside the closed-form edge
(`predicted`), the first crossing of the L_gen curve (`curve`) and of L_gen on the top n modes of U (`modes`);
`best_e_score_fit` fits the best E_score against psi_n (paper 1: 0.20 psi_n^-0.59).
The cost is the construction of U (p x p, p = 64 d, exact E_xi) and its float64 eigendecomposition, ~p^3
(bench/README.md):
- default, d = 16, 2 seeds (p = 1024, 8 models): ~1 minute end to end on a 2-core CPU (66 s, compilation
  included; one seed and 20 times, --config.rf.num_seeds=1 --config.rf.num_times=20: 20 s);
- `:paper`, d = 100, 5 seeds (p = 6400, 20 models, ~7 GB): GPU work (34 s on an H200); on a 2-core CPU each
  6400 x 6400 float64 eigendecomposition takes minutes. Override any field, e.g. --config.rf.d=32.
- `:wide`, d = 32, psi_p = 256, 2 seeds (p = 8192): the regime psi_p >> psi_n where the L_gen curve crossing
  also grows like n (~15 s on an H200; a 2-core CPU needs tens of minutes).

The fitted slopes of recorded runs are in bench/README.md. At psi_p = 64 the crossings of the full L_gen curve
grow slower than n (slope ~0.5): late in training most of L_gen sits in the slow modes below the memorization
bulk rho_1 (a small bulk of weight d/p near s_t^2 and the point mass at s_t^2, spread at finite d), which relax
on psi_p / (2 Delta_t s_t^2) whatever n. Read on the top n modes of U (the generalization bulk and rho_1),
`tau_mem_exponent_modes` is ~1; the curves still collapse against tau / tau_mem (losses.png, bottom row). At
psi_p = 256 (`:wide`) the full curves follow the edge as well.
"""

from jaxdiff.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.family = 'random_features'
  c.rf.d = 16
  c.rf.num_seeds = 2
  c.rf.psi_p = (64.0,)
  c.rf.psi_n = (4.0, 8.0, 16.0, 32.0)
  c.rf.t = (0.1,)
  c.rf.trainer = 'exact'
  c.rf.tau_min = 0.1
  c.rf.tau_max = 1e6
  c.rf.num_times = 200
  if arg == 'paper':
    c.rf.d = 100
    c.rf.num_seeds = 5
  elif arg == 'wide':
    c.rf.d = 32
    c.rf.psi_p = (256.0,)
  elif arg:
    raise ValueError(f"configs/rf_timescales.py: unknown argument {arg!r} (use '', 'paper' or 'wide')")
  return c
