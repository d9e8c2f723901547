"""Paper 1, random-features phase diagram (SPEC section 3): heatmaps of the generalization gap
L_gen = L_test - L_train over (psi_n, psi_p) at training times tau = 1e3 and 1e4, t = 0.1. Memorization
(large L_gen) needs psi_p > psi_n and a training time beyond tau_mem ~ psi_n.

    python -m jaxdiff.main --config=configs/rf_phase.py --workdir=workdirs/rf_phase
    python -m jaxdiff.main --config=configs/rf_phase.py:paper --workdir=workdirs/rf_phase_d100

Exact gradient flow, one model per (psi_p, psi_n) cell (nested training sets per psi_p). Writes phase.png,
one losses_*.png per psi_p, summary.json['groups'][*]['heatmap']. Cost (bench/README.md): default d = 12
(p up to 1536, 35 models) ~2 minutes on a 2-core CPU; `:paper` d = 100 (p up to 12800) is GPU work (the
float64 eigendecomposition of the p = 12800 matrices dominates; ~1 minute each on one H100).
"""

from jaxdiff.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.family = 'random_features'
  c.rf.d = 12
  c.rf.num_seeds = 1
  c.rf.psi_p = (8.0, 16.0, 32.0, 64.0, 128.0)
  c.rf.psi_n = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
  c.rf.t = (0.1,)
  c.rf.trainer = 'exact'
  c.rf.tau_min = 0.1
  c.rf.tau_max = 1e6
  c.rf.num_times = 100
  c.rf.heatmap_times = (1e3, 1e4)
  if arg == 'paper':
    c.rf.d = 100
  elif arg:
    raise ValueError(f"configs/rf_phase.py: unknown argument {arg!r} (use '' or 'paper')")
  return c
