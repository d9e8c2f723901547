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
- `:wide`, d = 32, psi_p = 256, 2 seeds (p = 8192): the regime psi_p >> psi_n where the measured L_gen
  crossing itself grows like n (GPU: ~15 s on an H200; a 2-core CPU needs tens of minutes).

Which tau_mem is linear in n (measured with the exact flow, seed-averaged, H200, jax 0.11.2):
- at psi_p = 64 (this config, and `:paper` at d = 100) the memorization bulk rho_1 spans
  [s^2 + v^2 (1 - r^1/2)^2, s^2 + v^2 (1 + r^1/2)^2], r = psi_p / psi_n = 16 ... 2: at r = 2 it is wide compared
  with its lower edge, so L_gen rises over a decade of tau and its crossings grow slower than n. d = 100:
  slope of the L_gen half-rise 0.47, of the L_test half-rise 0.54, while the lower edge, psi_p / (Delta_t
  lambda_n(U)) of each realized U (`tau_mem_exponent_spectral`) gives 0.95 and the closed form
  (`tau_mem_exponent_predicted`) 1.05; the L_test curves still collapse against tau / tau_mem (losses.png).
- at psi_p = 256 (`:wide`, r = 64 ... 8) the curves follow the edge: L_gen half-rise slope 1.02, L_test
  rise (10% of its climb) 1.06, spectral 1.02.
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
