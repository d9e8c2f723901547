"""The Ornstein-Uhlenbeck process (jaxdiff/diffusion/ou.py): closed forms, noising statistics, time grids and
distributions, the reverse samplers on an exact Gaussian score, and the DDPM <-> OU time mapping."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.diffusion import ddpm, ou

T_MIN, T_MAX = 1e-3, 5.0


def _exact_variance(t, s2):
  """e^-2t s^2 + Delta_t in float64."""
  return np.exp(-2 * t) * s2 - np.expm1(-2 * t)


def test_delta_and_mean_coef_are_the_closed_forms_in_float32():
  t = np.geomspace(1e-7, 10.0, 200)
  # Relative precision down to t = 1e-7, where 1 - exp(-2t) in float32 would have none.
  np.testing.assert_allclose(ou.delta(t), -np.expm1(-2 * t), rtol=2e-6)
  np.testing.assert_allclose(ou.mean_coef(t), np.exp(-t), rtol=2e-6)
  np.testing.assert_allclose(ou.marginal_variance(t, 0.3), _exact_variance(t, 0.3), rtol=2e-6)
  assert ou.delta(0.1).dtype == jnp.float32 and ou.mean_coef(np.float64(0.1)).dtype == jnp.float32


def test_noise_has_the_ou_marginal_variance():
  """x0 ~ N(0, s^2) noised at time t has variance e^-2t s^2 + Delta_t (one time per row, [B] times)."""
  n, s2 = 400_000, 2.5
  t = np.array([1e-3, 0.1, 1.0, 4.0], np.float32)
  k1, k2 = jax.random.split(jax.random.key(0))
  x_t = ou.noise(math.sqrt(s2) * jax.random.normal(k1, (4, n)), jnp.asarray(t), jax.random.normal(k2, (4, n)))
  var = np.asarray(jnp.mean(jnp.square(x_t), axis=1), np.float64)   # the mean is 0
  exact = _exact_variance(t.astype(np.float64), s2)
  # The mean of n squared N(0, v) draws has standard deviation v sqrt(2 / n): 5 of them.
  np.testing.assert_array_less(np.abs(var - exact), 5 * exact * math.sqrt(2 / n))


def test_noise_broadcasts_one_time_per_example_over_trailing_dims():
  k1, k2 = jax.random.split(jax.random.key(1))
  x0, xi = jax.random.normal(k1, (3, 2, 5)), jax.random.normal(k2, (3, 2, 5))
  t = jnp.array([0.01, 0.5, 2.0])
  out = ou.noise(x0, t, xi)
  assert out.shape == (3, 2, 5)
  for b in range(3):
    np.testing.assert_array_equal(out[b], ou.noise(x0[b], t[b], xi[b]))
  np.testing.assert_array_equal(ou.noise(x0, 0.5, xi), ou.noise(x0, jnp.full((3,), 0.5), xi))
  np.testing.assert_allclose(out[1], np.exp(-0.5) * x0[1] + np.sqrt(-np.expm1(-1.0)) * xi[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('spacing', ou.SPACINGS)
def test_time_grids_decrease_from_t_max_to_t_min(spacing):
  grid = ou.time_grid(T_MAX, T_MIN, 50, spacing)
  assert grid.shape == (51,) and grid[0] == T_MAX and grid[-1] == T_MIN
  assert np.all(np.diff(grid) < 0)
  # Geometric: a constant ratio; linear: a constant step.
  steps = np.log(grid[:-1] / grid[1:]) if spacing == 'log' else grid[:-1] - grid[1:]
  np.testing.assert_allclose(steps, steps[0], rtol=1e-9)


def test_unknown_spacing_or_time_distribution_is_refused():
  with pytest.raises(ValueError, match="'cosine'"):
    ou.time_grid(T_MAX, T_MIN, 10, 'cosine')
  with pytest.raises(ValueError, match="'beta'"):
    ou.sample_times(jax.random.key(0), (3,), T_MIN, T_MAX, 'beta')


@pytest.mark.parametrize('distribution', ou.DISTRIBUTIONS)
def test_sample_times_follow_the_named_distribution_in_range(distribution):
  n = 200_000
  t = ou.sample_times(jax.random.key(2), (n // 4, 4), T_MIN, T_MAX, distribution)
  assert t.shape == (n // 4, 4) and t.dtype == jnp.float32
  t = np.asarray(t, np.float64).ravel()
  assert t.min() >= T_MIN * (1 - 1e-6) and t.max() <= T_MAX * (1 + 1e-6)   # float32 rounding at the ends
  f = np.log if distribution == 'log_uniform' else (lambda v: v)
  z = (f(t) - f(T_MIN)) / (f(T_MAX) - f(T_MIN))   # U(0, 1) if t has the named law
  # A quantile of n uniforms has standard deviation <= sqrt(1/4 / n): 5 of them.
  np.testing.assert_allclose(np.quantile(z, [0.1, 0.25, 0.5, 0.75, 0.9]), [0.1, 0.25, 0.5, 0.75, 0.9],
                             atol=5 * math.sqrt(0.25 / n))


def _gaussian_score(s2):
  """The exact score of P_t for data N(0, diag(s2)): -x / (e^-2t s2 + Delta_t). x: [B, d], t: [B]."""
  return lambda x, t, y=None: -x / ou.marginal_variance(t[:, None], s2)


def _chain_factors(grid, s2, coef):
  """Per step, the factor a of the linear update x <- a x (+ noise) for the Gaussian score, in float64: [S, d]."""
  t, h = grid[:-1, None], (grid[:-1] - grid[1:])[:, None]
  return 1 + h - coef * h / _exact_variance(t, s2)


def test_euler_maruyama_with_the_exact_score_samples_the_data_variance():
  """From N(0, I) at t_max, the reverse SDE with the exact score of N(0, diag(s2)) data ends with variance s2."""
  s2 = np.array([0.25, 4.0])
  n, steps = 10_000, 250   # 5e6 normal draws: about a second on the test suite's unoptimised XLA:CPU
  grid = ou.time_grid(T_MAX, T_MIN, steps)
  k0, k1 = jax.random.split(jax.random.key(3))
  run = jax.jit(lambda: ou.euler_maruyama(_gaussian_score(jnp.asarray(s2, jnp.float32)),
                                          jax.random.normal(k0, (n, 2)), k1, grid))
  var = np.asarray(jnp.mean(jnp.square(run()), axis=0), np.float64)
  se = s2 * math.sqrt(2 / n)   # standard deviation of the sample variance (mean 0 known)
  # The scheme's own variance, x <- a x + sqrt(2h) z with no noise on the last step, in float64: the samples
  # match it within sampling error (this checks the update and the noise schedule) ...
  a = _chain_factors(grid, s2, 2.0)
  h = grid[:-1] - grid[1:]
  v = np.ones(2)
  for i in range(steps):
    v = a[i] ** 2 * v + (2 * h[i] if i < steps - 1 else 0.0)
  np.testing.assert_array_less(np.abs(var - v), 5 * se)
  # ... and the data variance within sampling error plus the scheme's O(h) bias and Delta_t_min (< 3% here).
  assert np.all(np.abs(v / s2 - 1) < 0.03)
  np.testing.assert_array_less(np.abs(var - s2), 5 * se + 0.03 * s2)


def test_probability_flow_log_density_of_a_gaussian_target_is_exact_up_to_discretisation():
  """The flow with the exact score of N(0, diag(s2)) maps N(0, I) to a Gaussian; log q is that Gaussian's
  exact log density (change of variables), and it equals log N(x; 0, diag(s2)) up to the discretisation."""
  s2 = np.array([0.25, 1.0, 3.0])
  n, steps = 4000, 1000
  grid = ou.time_grid(T_MAX, T_MIN, steps)
  x_T = jax.random.normal(jax.random.key(4), (n, 3))
  x, log_q = jax.jit(lambda v: ou.probability_flow(_gaussian_score(jnp.asarray(s2, jnp.float32)), v, grid))(x_T)
  x, log_q = np.asarray(x, np.float64), np.asarray(log_q, np.float64)

  def log_normal(v, var):
    return -0.5 * np.sum(np.log(2 * np.pi * var) + v * v / var, axis=1)

  # The discrete map is x = c x_T with c = prod a (float64): q = N(0, diag(c^2)) exactly.
  c = np.prod(_chain_factors(grid, s2, 1.0), axis=0)
  np.testing.assert_allclose(x, c * np.asarray(x_T), rtol=3e-4, atol=1e-5)
  np.testing.assert_allclose(log_q, log_normal(x, c ** 2), atol=2e-3)
  # Against the target: c^2 = s2 (1 + r) with |r| < 1% here, so |log q - log p| <= sum |r| (1 + x^2 / s2) / 2.
  r = c ** 2 / _exact_variance(T_MIN, s2) - 1
  assert np.abs(r).max() < 0.01
  err = np.abs(log_q - log_normal(x, _exact_variance(T_MIN, s2)))
  assert np.all(err <= np.sum(np.abs(r) * (1 + x * x / s2), axis=1) / 2 + 2e-3)
  assert abs(float(np.mean(log_q - log_normal(x, s2)))) < 0.01   # KL(q || N(0, diag(s2))) estimate


def test_ddpm_steps_and_ou_times_round_trip():
  s = ddpm.linear_schedule(1000, 1e-4, 0.02)
  betas = np.linspace(1e-4, 0.02, 1000)
  # t_OU = -1/2 log(alpha_bar); t_OU = 0.01 is step ~40 of 1000 (SPEC section 1).
  np.testing.assert_allclose(ou.ddpm_ou_time(s.alpha_bars, jnp.arange(1000)), -0.5 * np.log(np.cumprod(1 - betas)),
                             rtol=1e-4, atol=1e-7)
  t = int(ou.ddpm_step_from_ou_time(s.alpha_bars, 0.01))
  assert 38 <= t <= 42
  for step in (1, 40, 300, 999):
    assert int(ou.ddpm_step_from_ou_time(s.alpha_bars, ou.ddpm_ou_time(s.alpha_bars, step))) == step
  # The schedule's name for it, and the DDPM forward marginal is the OU one at that time.
  steps = jnp.array([1, 40, 300, 999])
  t_ou = ou.ddpm_ou_time(s.alpha_bars, steps)
  np.testing.assert_array_equal(ddpm.step_from_ou_time(s, t_ou), steps)
  k1, k2 = jax.random.split(jax.random.key(5))
  x0, eps = jax.random.normal(k1, (4, 6)), jax.random.normal(k2, (4, 6))
  np.testing.assert_allclose(ddpm.q_sample(s, x0, steps, eps), ou.noise(x0, t_ou, eps), rtol=1e-4, atol=1e-5)
