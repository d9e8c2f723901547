"""DDPM: the schedule against closed forms, noising statistics, and samplers on an exact Gaussian score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.diffusion import ddpm as diffusion


def test_linear_schedule_matches_closed_form():
  s = diffusion.linear_schedule(1000, 1e-4, 0.02)
  betas = np.linspace(1e-4, 0.02, 1000)
  np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
  np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - betas), rtol=2e-5)
  # The OU time of each step: tests/test_ou.py.


def test_bad_schedule_is_refused():
  with pytest.raises(ValueError, match='beta_min'):
    diffusion.linear_schedule(10, 0.5, 0.1)


def test_q_sample_has_the_forward_marginal():
  s = diffusion.linear_schedule(1000)
  x0 = jnp.full((200_000, 1), 2.0)
  t = jnp.full((200_000,), 500)
  xt = diffusion.q_sample(s, x0, t, jax.random.normal(jax.random.PRNGKey(0), x0.shape))
  ab = float(s.alpha_bars[500])
  assert abs(float(xt.mean()) - 2.0 * np.sqrt(ab)) < 0.01
  assert abs(float(xt.var()) - (1 - ab)) < 0.01


def _gaussian(d=3):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(d, d))
  cov = 0.3 * a @ a.T / d + 0.05 * np.eye(d)
  mean = rng.normal(size=d)
  return mean, cov


def _exact_eps(schedule, mean, cov):
  """eps*(x_t, t) = sqrt(1 - ab) C_t^{-1} (x_t - sqrt(ab) m), with C_t = ab S + (1 - ab) I, applied in the
  eigenbasis S = Q diag(l) Q^T (computed once in float64): C_t^{-1} = Q diag(1 / (ab l + 1 - ab)) Q^T."""
  lam, q = np.linalg.eigh(np.asarray(cov, np.float64))
  mean, lam, q = (jnp.asarray(a, jnp.float32) for a in (mean, lam, q))

  def eps_fn(x, t):
    ab = schedule.alpha_bars[t.astype(jnp.int32)][:, None]          # [B, 1]
    r = (x - jnp.sqrt(ab) * mean) @ q                                # in the eigenbasis
    return jnp.sqrt(1 - ab) * (r / (ab * lam + 1 - ab)) @ q.T
  return eps_fn


@pytest.mark.parametrize('sampler,steps,eta', [('ddim', 100, 0.0), ('ddim', 200, 1.0), ('ddpm', 1000, 0.0)])
def test_sampler_with_exact_score_reproduces_gaussian(sampler, steps, eta):
  mean, cov = _gaussian()
  s = diffusion.linear_schedule(1000)
  run = jax.jit(lambda key: diffusion.sample(s, _exact_eps(s, mean, cov), (20_000, 3), key,
                                             sampler=sampler, sample_steps=steps, eta=eta))
  x = np.asarray(run(jax.random.PRNGKey(0)), np.float64)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
  emp = np.cov(x.T)
  assert np.abs(emp - cov).max() / np.abs(cov).max() < 0.06, (emp, cov)


def test_ddpm_loss_of_the_exact_score_is_the_bayes_error():
  """The exact eps of Gaussian data reaches the closed-form minimum, and 1.1 x eps pays exactly the excess.

  In the eigenbasis of S (eigenvalues l), eps | x_t has variance ab l / (ab l + 1 - ab) per direction: the
  minimum of the loss is its mean over t in 1..T-1 and the directions. eps* = E[eps | x_t] has second moment
  (1 - ab) / (ab l + 1 - ab) and is orthogonal to eps - eps*, so 1.1 eps* adds 0.01 times that. 50,000
  examples: both agree within ~1% (Monte Carlo); 4% is 4 standard errors.
  """
  mean, cov = _gaussian()
  s = diffusion.linear_schedule(1000)
  x0 = jax.random.multivariate_normal(jax.random.PRNGKey(1), mean, cov, (50_000,))
  exact = _exact_eps(s, mean, cov)
  loss_exact = diffusion.ddpm_loss(s, exact, x0, jax.random.PRNGKey(2))
  loss_off = diffusion.ddpm_loss(s, lambda x, t: 1.1 * exact(x, t), x0, jax.random.PRNGKey(2))
  lam = np.linalg.eigvalsh(cov)
  ab = np.asarray(s.alpha_bars, np.float64)[1:, None]     # t in 1..T-1, as ddpm_losses draws it
  bayes = np.mean(ab * lam / (ab * lam + 1 - ab))
  excess = 0.01 * np.mean((1 - ab) / (ab * lam + 1 - ab))
  assert float(loss_exact) == pytest.approx(bayes, rel=0.04)
  assert float(loss_off) - float(loss_exact) == pytest.approx(excess, rel=0.04)


def test_fixed_step_training_loss_is_the_loss_at_that_step():
  """diffusion.fixed_step (paper 1's fixed-diffusion-time mode): every example at the one step, with the
  noise the uniform-step loss would draw."""
  s = diffusion.linear_schedule(1000)
  x0 = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
  eps_fn = lambda x, t: 0.5 * x + 1e-3 * t[:, None]   # noqa: E731: depends on the step
  key = jax.random.PRNGKey(2)
  fixed = diffusion.ddpm_losses(s, eps_fn, x0, key, fixed_step=40)
  want = diffusion.eps_loss_at(s, eps_fn, x0, jnp.full((64,), 40), jax.random.split(key)[1])
  np.testing.assert_allclose(fixed, want, rtol=1e-6)
  assert not np.allclose(diffusion.ddpm_losses(s, eps_fn, x0, key), want)


def test_ddim_timesteps_cover_the_chain():
  ts = np.asarray(diffusion.ddim_timesteps(1000, 100))
  assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 100 and np.all(np.diff(ts) < 0)
  with pytest.raises(ValueError):
    diffusion.ddim_timesteps(1000, 0)


@pytest.mark.parametrize('sampler', ['ddim', 'ddpm'])
def test_wide_clip_bounds_change_nothing(sampler):
  """Clipping x0 to bounds the estimate never reaches leaves both samplers' trajectories as they were."""
  mean, cov = _gaussian()
  s = diffusion.linear_schedule(200)
  eps = _exact_eps(s, mean, cov)
  key = jax.random.PRNGKey(3)
  free = diffusion.sample(s, eps, (500, 3), key, sampler=sampler, sample_steps=50)
  wide = diffusion.sample(s, eps, (500, 3), key, sampler=sampler, sample_steps=50, clip=(-1e4, 1e4))
  np.testing.assert_allclose(free, wide, rtol=1e-4, atol=1e-4)


def test_clipping_rescues_a_network_with_bounded_output():
  """A network's eps has a bounded range (it trained on N(0, 1) targets); where the starting noise exceeds
  it, DDIM's x0 estimate is off by (|x| - bound) / sqrt(alpha_bar) ~ 160x at t = T-1 and the sample ends far
  from the data. Clipping x0 to the data range, as the samplers do with `clip`, keeps every sample in range."""
  s = diffusion.linear_schedule(1000)
  data = jnp.array([[-0.2], [0.8]])  # two points, like a centred binary pixel

  def eps_fn(x, t):  # the exact eps of the two-point data set, limited to [-2, 2]
    ab = s.alpha_bars[t.astype(jnp.int32)][:, None]
    logits = -jnp.square(x[:, None, :] - jnp.sqrt(ab)[:, None] * data[None]).sum(-1) / (2 * (1 - ab))
    x0 = jax.nn.softmax(logits, axis=1) @ data
    return jnp.clip((x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab), -2.0, 2.0)

  dist = lambda x: np.abs(np.asarray(x) - np.array([-0.2, 0.8])[None]).min(1)
  key = jax.random.PRNGKey(0)
  free = diffusion.sample(s, eps_fn, (4000, 1), key, sampler='ddim', sample_steps=100)
  assert np.mean(dist(free) > 0.5) > 0.02  # ~4.6% of N(0, 1) starts exceed 2
  assert np.abs(np.asarray(free)).max() > 10
  for sampler in ('ddim', 'ddpm'):
    clipped = np.asarray(diffusion.sample(s, eps_fn, (4000, 1), key, sampler=sampler, sample_steps=100,
                                          clip=(-0.2, 0.8)))
    assert np.all(clipped >= -0.2 - 1e-5) and np.all(clipped <= 0.8 + 1e-5)
    assert np.mean(dist(clipped) < 0.05) > 0.97, sampler
