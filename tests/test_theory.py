"""The random-matrix theory of the random-features model reproduces the spectrum of U (paper 1, section 3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import theory
from jaxdiff.models import random_features as rf


def test_coefficients_are_the_gaussian_expectations():
  t = 0.1
  delta = 1 - math.exp(-2 * t)
  lin = theory.coefficients('linear', t)
  assert lin.a == pytest.approx(1.0) and lin.b == pytest.approx(math.sqrt(delta))
  assert lin.v2 == pytest.approx(0.0, abs=1e-12) and lin.s2 == pytest.approx(0.0, abs=1e-12)
  relu = theory.coefficients('relu', t)
  assert relu.a == pytest.approx(0.5, abs=1e-3)            # E[relu'(h)] = P(h > 0)
  # tanh against Monte Carlo of the definitions (h = e^-t u + sqrt(Delta) z; z, z' independent noises).
  c = theory.coefficients('tanh', t, data_var=2.0)
  rng = np.random.default_rng(0)
  u, z, z2 = rng.standard_normal((3, 2_000_000))
  x = math.exp(-t) * math.sqrt(2.0) * u
  f, f2 = np.tanh(x + math.sqrt(delta) * z), np.tanh(x + math.sqrt(delta) * z2)
  a_mc = np.mean(1 - f ** 2)
  cov_mc = np.mean(f * f2)                                  # E_u[E_z[f]^2]
  assert c.a == pytest.approx(a_mc, abs=2e-3)
  assert c.v2 == pytest.approx(cov_mc - math.exp(-2 * t) * c.a ** 2 * 2.0, abs=2e-3)
  assert c.s2 == pytest.approx(np.mean(f ** 2) - cov_mc - c.b ** 2, abs=2e-3)
  assert c.mu0 == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('t,psi_p,psi_n', [(0.01, 16.0, 4.0), (0.1, 64.0, 8.0), (0.1, 4.0, 8.0)])
def test_density_integrates_to_one_with_the_point_mass(t, psi_p, psi_n):
  c = theory.coefficients('tanh', t)
  grid = theory.density_grid(c, psi_p, psi_n, 1500)
  rho = theory.spectral_density(grid, c, psi_p, psi_n)
  w0 = theory.point_mass(psi_p, psi_n)
  assert w0 == pytest.approx(max(0.0, 1 - (psi_n + 1) / psi_p))
  assert np.trapezoid(rho, grid) + w0 == pytest.approx(1.0, abs=5e-3)
  if w0 > 0:  # the pole of m(z) at s_t^2 carries the point mass: eps Im m(s^2 + i eps) -> w0
    m = theory.stieltjes([c.s2], c, psi_p, psi_n, eps_min=1e-8)
    assert 1e-8 * m.imag[0] == pytest.approx(w0, rel=1e-3)


@pytest.mark.parametrize('t', [0.01, 0.1])
def test_memorization_bulk_edges_match_the_closed_form(t):
  c = theory.coefficients('tanh', t)
  for psi_p, psi_n, tol in [(64.0, 8.0, 0.06), (400.0, 40.0, 0.015)]:
    lo, hi = theory.memorization_edges(c, psi_p, psi_n)
    grid = np.linspace(0.7 * lo, 1.2 * hi, 500)
    rho = theory.spectral_density(grid, c, psi_p, psi_n)
    a, b = max(theory.support_intervals(grid, rho, 1e-4), key=lambda ab: min(ab[1], hi) - max(ab[0], lo))
    assert a == pytest.approx(lo, rel=tol) and b == pytest.approx(hi, rel=tol)
  assert theory.memorization_edges(c, 8.0, 16.0) is None   # underparameterized: no rho_1
  assert theory.predicted_tau_mem(c, 8.0, 16.0) == math.inf


def test_predicted_tau_mem_grows_linearly_with_n():
  from jaxdiff.timescales import fit_power_law
  c = theory.coefficients('tanh', 0.1)
  psi_n = [4.0, 8.0, 16.0, 32.0]
  pred = [theory.predicted_tau_mem(c, 64.0, x) for x in psi_n]
  assert abs(fit_power_law(psi_n, pred)['alpha'] - 1) < 0.15
  assert fit_power_law(psi_n, [theory.asymptotic_tau_mem(c, x) for x in psi_n])['alpha'] == pytest.approx(1.0)


def _bulks(eigs, d, n):
  desc = np.sort(eigs)[::-1]
  return desc[:d], desc[d:n], desc[n:n + d]   # rho_2, rho_1, the d partners just above s_t^2


def test_density_matches_the_gaussian_equivalent_spectrum():
  """d = 30: the three bulks of U_GE hold d, n - d and d eigenvalues and follow rho."""
  t, d, psi_p, psi_n = 0.01, 30, 16.0, 4.0
  p, n = int(psi_p * d), int(psi_n * d)
  c = theory.coefficients('tanh', t)
  grid = theory.density_grid(c, psi_p, psi_n, 600)
  rho = theory.spectral_density(grid, c, psi_p, psi_n)
  intervals = theory.support_intervals(grid, rho, 1e-6)
  assert len(intervals) == 3
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  w = rf.init_features(k1, p, d)
  u = theory.gaussian_equivalent_u(k3, c, w, rf.sample_gaussian(k2, n, jnp.ones(d)))
  eigs = np.asarray(rf.eigvalsh64(u))
  rho2, rho1, partner = _bulks(eigs, d, n)
  for (a, b), e, count, tol in zip(intervals[::-1], (rho2, rho1, partner), (d, n - d, d), (0.2, 0.06, 0.15)):
    m = (grid >= a) & (grid <= b)
    assert np.trapezoid(rho[m], grid[m]) * p == pytest.approx(count, abs=1.5)
    assert theory.ks_distance(e, grid, rho, a, b) < tol
  assert np.sort(eigs)[:p - n - d] == pytest.approx(c.s2, abs=2e-5)   # the point mass


@pytest.mark.slow
def test_paper_spectrum_d100():
  """SPEC: d = 100, psi_p = 64, psi_n = 8, t = 0.01. The Gaussian equivalent follows rho closely; the true
  tanh features agree on rho_2 and are wider on rho_1 (finite-d non-Gaussian corrections).

  Two 6400 x 6400 float64 eigenvalue problems and U with exact E_xi (its time: bench/README.md, "Tests").
  """
  t, d, psi_p, psi_n = 0.01, 100, 64.0, 8.0
  p, n = int(psi_p * d), int(psi_n * d)
  c = theory.coefficients('tanh', t)
  grid = theory.density_grid(c, psi_p, psi_n, 1500)
  rho = theory.spectral_density(grid, c, psi_p, psi_n)
  intervals = theory.support_intervals(grid, rho, 1e-6)
  (r2a, r2b), (r1a, r1b) = intervals[-1], intervals[-2]
  assert 9.0 < r2a < 11.0 and 40.0 < r2b < 50.0                     # SPEC: second bulk ~10 to ~45
  k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
  w = rf.init_features(k1, p, d)
  x = rf.sample_gaussian(k2, n, jnp.ones(d))
  ge = _bulks(np.asarray(rf.eigvalsh64(theory.gaussian_equivalent_u(k3, c, w, x))), d, n)
  assert theory.ks_distance(ge[1], grid, rho, r1a, r1b) < 0.02
  assert theory.ks_distance(ge[0], grid, rho, r2a, r2b) < 0.06
  assert ge[1].min() == pytest.approx(r1a, rel=0.03) and ge[1].max() == pytest.approx(r1b, rel=0.03)
  real = _bulks(np.asarray(rf.eigvalsh64(rf.nested_moments(w, x, [n], t, k4).u[0])), d, n)
  assert theory.ks_distance(real[0], grid, rho, r2a, r2b) < 0.06
  assert real[0].min() == pytest.approx(r2a, rel=0.1) and real[0].max() == pytest.approx(r2b, rel=0.06)
  assert theory.ks_distance(real[1], grid, rho, r1a, r1b) < 0.1
