"""Paper 1, random-features losses (SPEC section 3): L_train, L_test, L_gen and E_score against training time
for psi_p = 64, psi_n in {4, 8, 16, 32}, t = 0.1, and their collapse against tau / tau_mem.

    python -m jaxdiff.main --config=configs/rf_timescales.py --workdir=workdirs/rf_timescales
    python -m jaxdiff.main --config=configs/rf_timescales.py:paper --workdir=workdirs/rf_timescales_d100

Exact gradient flow (closed form in the eigenbasis of U, 200 times in [0.1, 1e6]); summary.json records
tau_mem per psi_n (measured from L_gen, and predicted psi_p / (Delta_t lambda_min)) and `tau_mem_exponent`.
The cost is the construction of U (p x p, p = 64 d, exact E_xi) and its float64 eigendecomposition, ~p^3:
- default, d = 16, 2 seeds (p = 1024, 8 models): ~1 minute end to end on the shared 2-core CPU
  (measured 66 s, compilation included);
- `:paper`, d = 100, 5 seeds (p = 6400, 20 models, ~7 GB): GPU work; on a 2-core CPU each 6400 x 6400
  float64 eigendecomposition takes minutes. Override any field, e.g. --config.rf.d=32.
With psi_p / psi_n <= 16 the L_gen midpoint grows slower than n (summary `tau_mem_exponent` ~0.55): d modes
just above s_t^2 carry most of the memorization gap; `tau_mem_exponent_spectral` (psi_p / (Delta_t
lambda_n(U)) of each realized U) and `tau_mem_exponent_predicted` are ~1.
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
  elif arg:
    raise ValueError(f"configs/rf_timescales.py: unknown argument {arg!r} (use '' or 'paper')")
  return c
