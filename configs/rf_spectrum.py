"""Paper 1, spectrum of the random-features correlation matrix U (SPEC section 3): one realization of U at
psi_p = 64, psi_n = 8, t = 0.01, d = 100 against the density from the Stieltjes-transform equations
(point mass at s_t^2, memorization bulk rho_1 near [0.09, 0.36], generalization bulk rho_2 near [10, 45]).

    python -m jaxdiff.main --config=configs/rf_spectrum.py --workdir=workdirs/rf_spectrum
    python -m jaxdiff.main --config=configs/rf_spectrum.py:small --workdir=workdirs/rf_spectrum_small

Writes spectrum.png and summary.json['spectrum_check'] (bulk edges and KS distances), plus the losses of
that one model along the exact gradient flow. Cost on a 2-core CPU (bench/README.md): d = 100 (p = 6400):
building U (exact E_xi, Hermite order 8) ~1 minute and its float64 eigendecomposition 1-3 minutes, ~5 minutes
in all, 2 GB; `:small` (d = 40, p = 2560) ~30 s. The theory solver (1000 points) takes a few seconds.
At d = 100 the bulk rho_2 and the density agree closely; rho_1 of the true tanh features is wider than the
Gaussian-equivalent theory (the cubic Hermite part of tanh is not yet identity-like at p ~ d^3/25; the KS
distances are in summary.json and bench/README.md).
"""

from jaxdiff.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.family = 'random_features'
  c.rf.d = 100
  c.rf.num_seeds = 1
  c.rf.psi_p = (64.0,)
  c.rf.psi_n = (8.0,)
  c.rf.t = (0.01,)
  c.rf.trainer = 'exact'
  c.rf.tau_min = 0.1
  c.rf.tau_max = 1e7
  c.rf.num_times = 100
  c.rf.theory_grid = 1000
  if arg == 'small':
    c.rf.d = 40
  elif arg:
    raise ValueError(f"configs/rf_spectrum.py: unknown argument {arg!r} (use '' or 'small')")
  return c
