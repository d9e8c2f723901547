"""Random-matrix theory of the random-features score model (paper 1, section 3; SPEC section 3).

The model s_A(x) = A sigma(W x / sqrt(d)) / sqrt(p) is trained at one diffusion time t on n points of
N(0, Sigma). Its loss is quadratic in A with Hessian proportional to the feature correlation matrix
U = (1/n) sum_nu E_xi[f f^T] (p x p), so the training timescales are inverse eigenvalues of U. In the
proportional limit (n, p, d -> inf, psi_p = p/d, psi_n = n/d fixed) U has the same spectrum as its
Gaussian equivalent

    U_GE = (1/n) G G^T + b_t^2 W W^T / d + s_t^2 I_p,   G = e^-t a_t W X / sqrt(d) + v_t Omega,   (*)

with X = [x_1 .. x_n] the data, Omega (p x n) i.i.d. N(0, 1), and coefficients that are Gaussian
expectations of sigma: with h = e^-t sigma_x u + sqrt(Delta_t) z (u, z standard normal, sigma_x^2 = Tr Sigma/d),

    a_t = E[sigma'(h)]                                    (linear response to the data),
    b_t = sqrt(Delta_t) a_t = E[sigma(h) z]               (linear response to the noise),
    v_t^2 = Var_u(E_z[sigma(h)]) - e^-2t a_t^2 sigma_x^2   (nonlinear part of the conditional mean),
    s_t^2 = Var(sigma(h)) - Var_u(E_z[sigma(h)]) - b_t^2   (what is left: a multiple of the identity).

All of them are computed here with Gauss-Hermite quadrature (not Monte Carlo).

Spectral density of (*). Conditionally on W the columns of G are i.i.d. N(0, C), C = c^2 W Sigma W^T / d + v^2,
c = e^-t a_t, so (*) is a sample covariance plus a fixed matrix; its resolvent R = (U - z)^-1 has the
deterministic equivalent (K + C / (1 + delta))^-1 with K = b^2 W W^T / d + s^2 - z and delta = Tr(C R) / n.
That matrix is again a W-sample covariance, which gives two coupled equations for the Stieltjes transform
m(z) = Tr(R) / p and the auxiliary delta(z), with E_S an average over the eigenvalues l of Sigma:

    D(l)  = b^2 + c^2 l / (1 + delta)
    1 / m = s^2 - z + v^2 / (1 + delta) + E_S[ D / (1 + psi_p m D) ]
    delta = (psi_p / psi_n) m ( v^2 + c^2 E_S[ l / (1 + psi_p m D) ] ).

This is a two-unknown form of the three coupled equations of paper 1's Theorem 3.1 (there in unknowns
q, r, s; the two averages over Sigma above play the role of r and s); the tests check it against sampled
U_GE, bulk by bulk, and against the point mass. The equations are solved on a grid of real
lambda by Newton's method with continuation in the imaginary part, from z = lambda + i eps_max down to
z = lambda + i eps_min, and rho(lambda) = Im m(lambda + i eps_min) / pi. The spectrum also has a point mass
at s_t^2 of weight 1 - (psi_n + 1) / psi_p (the directions outside the span of G and W), a bulk rho_2 on
the scale psi_p that does not depend on n (it sets tau_gen ~ 1 / Delta_t), and, when psi_p > psi_n, the
memorization bulk rho_1 with edges s_t^2 + v_t^2 (1 -/+ sqrt(psi_p / psi_n))^2, whose lower edge sets
tau_mem = psi_p / (2 Delta_t lambda_min) ~ psi_n / (2 Delta_t v_t^2), proportional to n (paper 1 writes
psi_p / (Delta_t lambda_min); the 2 is that of the flow's exp(-2 Delta_t lambda tau / psi_p), `mode_time`).

Precision: the coefficients are float64 NumPy (scalars), the Stieltjes solver runs in complex128 under
`jax.enable_x64` because Newton's method at eps_min ~ 1e-9 close to the real axis needs it; everything
else in jaxdiff stays float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.models.random_features import activation_fn, gauss_hermite


@dataclasses.dataclass(frozen=True)
class Coefficients:
  """Gaussian-equivalence coefficients of the activation at diffusion time t (see the module docstring)."""
  t: float
  delta: float      # Delta_t = 1 - e^-2t
  data_var: float   # sigma_x^2 = Tr(Sigma) / d
  a: float          # a_t
  b: float          # b_t = sqrt(Delta_t) a_t
  v2: float         # v_t^2
  s2: float         # s_t^2
  mu0: float        # E[sigma(h)] (0 for odd activations; a rank-one outlier otherwise, ignored by the theory)

  @property
  def c2(self) -> float:
    """(e^-t a_t)^2, the weight of the data part of G."""
    return math.exp(-2 * self.t) * self.a ** 2


def _apply64(fn: Callable, x: np.ndarray) -> np.ndarray:
  with jax.enable_x64(True):
    return np.asarray(fn(jnp.asarray(x, jnp.float64)), np.float64)


def coefficients(activation: str | Callable, t: float, data_var: float = 1.0, *,
                 num_nodes: int = 80) -> Coefficients:
  """a_t, b_t, v_t^2, s_t^2 of the activation by (nested, 2-D) Gauss-Hermite quadrature in float64.

  Args:
    activation: a name of `jaxdiff.models.random_features.ACTIVATIONS` or a jnp-traceable function.
    t: the OU diffusion time (> 0).
    data_var: sigma_x^2 = Tr(Sigma) / d, the variance of each coordinate of w . x / sqrt(d).
  """
  if not t > 0:
    raise ValueError(f'diffusion time t must be > 0, got {t}')
  if not data_var >= 0:
    raise ValueError(f'data_var must be >= 0, got {data_var}')
  fn = activation_fn(activation) if isinstance(activation, str) else activation
  z, w = gauss_hermite(num_nodes)
  e, delta = math.exp(-t), -math.expm1(-2 * t)
  sx = math.sqrt(data_var)
  gamma = math.sqrt(e * e * data_var + delta)                     # std of the pre-activation h
  s1 = _apply64(fn, gamma * z)
  mu0 = float(w @ s1)
  a = float(w @ (s1 * z)) / gamma                                 # Stein: E[sigma(h) h] / Var(h) = E[sigma'(h)]
  second = float(w @ (s1 * s1))
  # g(u) = E_z[sigma(e sx u + sqrt(Delta) z)], the conditional mean of a feature given the clean input.
  h2 = e * sx * z[:, None] + math.sqrt(delta) * z[None, :]
  g = _apply64(fn, h2) @ w
  g_second = float(w @ (g * g))
  b = math.sqrt(delta) * a
  v2 = g_second - mu0 ** 2 - (e * a) ** 2 * data_var
  s2 = second - g_second - b ** 2
  # Quadrature rounding can leave tiny negatives for (near-)linear activations.
  return Coefficients(t=float(t), delta=delta, data_var=float(data_var), a=a, b=b, v2=max(v2, 0.0),
                      s2=max(s2, 0.0), mu0=mu0)


# ----------------------------------------------------------------------------------------------------------
# The Gaussian-equivalent matrix and closed forms


def gaussian_equivalent_u(key: jax.Array, coef: Coefficients, w: jax.Array, x: jax.Array) -> jax.Array:
  """U_GE of (*) for features W [p, d] and clean training data x [n, d]; returns [p, p] (float32)."""
  p, d = w.shape
  n = x.shape[0]
  c = math.exp(-coef.t) * coef.a
  omega = jax.random.normal(key, (p, n), w.dtype)
  g = c * (w @ x.T) / math.sqrt(d) + math.sqrt(coef.v2) * omega
  return g @ g.T / n + coef.b ** 2 * (w @ w.T) / d + coef.s2 * jnp.eye(p, dtype=w.dtype)


def point_mass(psi_p: float, psi_n: float) -> float:
  """Weight of the eigenvalue s_t^2 of U: the p - n - d directions outside the span of G and W."""
  return max(0.0, 1.0 - (psi_n + 1.0) / psi_p)


def memorization_edges(coef: Coefficients, psi_p: float, psi_n: float) -> tuple[float, float] | None:
  """Closed-form edges of the bulk rho_1, s_t^2 + v_t^2 (1 -/+ sqrt(psi_p/psi_n))^2; None if psi_p <= psi_n."""
  if psi_p <= psi_n:
    return None
  r = math.sqrt(psi_p / psi_n)
  return coef.s2 + coef.v2 * (1 - r) ** 2, coef.s2 + coef.v2 * (1 + r) ** 2


def mode_time(psi_p: float, delta: float, lam):
  """The relaxation time psi_p / (2 Delta_t lambda) of a mode of U of eigenvalue lambda, in the training time
  tau = k eta / d^2 of `jaxdiff.models.random_features`, where the mode relaxes as
  exp(-2 Delta_t lambda tau / psi_p). Paper 1 writes the timescale psi_p / (Delta_t lambda), without the 2.
  Multiply by d / psi_p for the time axis of the authors' script (k eta with their unnormalized A)."""
  return psi_p / (2.0 * delta * lam)


def predicted_tau_mem(coef: Coefficients, psi_p: float, psi_n: float) -> float:
  """tau_mem = psi_p / (2 Delta_t lambda_min) (`mode_time`), lambda_min the lower edge of rho_1 (inf if
  psi_p <= psi_n)."""
  edges = memorization_edges(coef, psi_p, psi_n)
  if edges is None or edges[0] <= 0:
    return math.inf
  return mode_time(psi_p, coef.delta, edges[0])


def asymptotic_tau_mem(coef: Coefficients, psi_n: float) -> float:
  """psi_p >> psi_n form of `predicted_tau_mem`: psi_n / (2 Delta_t v_t^2), exactly linear in n."""
  return psi_n / (2.0 * coef.delta * coef.v2) if coef.v2 > 0 else math.inf


# ----------------------------------------------------------------------------------------------------------
# The Stieltjes-transform equations


def _residual(x: jax.Array, z: jax.Array, prm: dict) -> jax.Array:
  """The two equations F(m, delta) = 0 of the module docstring (holomorphic in m, delta). x: [2] complex."""
  m, dl = x[0], x[1]
  l, wl = prm['sigma_eigs'], prm['sigma_weights']
  dd = prm['b2'] + prm['c2'] * l / (1 + dl)
  den = 1 + prm['psi_p'] * m * dd
  f1 = m * (prm['s2'] - z + prm['v2'] / (1 + dl) + jnp.sum(wl * dd / den)) - 1
  f2 = dl - prm['psi_p'] / prm['psi_n'] * m * (prm['v2'] + prm['c2'] * jnp.sum(wl * l / den))
  return jnp.stack([f1, f2])


def _newton(x: jax.Array, z: jax.Array, prm: dict, steps: int) -> jax.Array:
  """`steps` Newton iterations with backtracking that keep Im m >= 0 (the physical branch for Im z > 0)."""
  jac = jax.jacfwd(_residual, holomorphic=True)
  fracs = jnp.array([1.0, 0.5, 0.25, 0.125, 0.0625])

  def step(_, x):
    f = _residual(x, z, prm)
    j = jac(x, z, prm)
    det = j[0, 0] * j[1, 1] - j[0, 1] * j[1, 0]
    dx = jnp.stack([j[1, 1] * f[0] - j[0, 1] * f[1], j[0, 0] * f[1] - j[1, 0] * f[0]]) / det
    cands = x[None, :] - fracs[:, None] * dx[None, :]
    res = jax.vmap(lambda c: jnp.sum(jnp.abs(_residual(c, z, prm)) ** 2))(cands)
    ok = jnp.isfinite(res) & (cands[:, 0].imag >= 0) & (res < jnp.sum(jnp.abs(f) ** 2))
    best = jnp.argmax(ok)  # the longest acceptable step
    return jnp.where(ok.any() & jnp.isfinite(det), cands[best], x)

  return jax.lax.fori_loop(0, steps, step, x)


@functools.partial(jax.jit, static_argnames='steps')
def _solve_grid(lams: jax.Array, eps: jax.Array, prm: dict, steps: int) -> jax.Array:
  """m at lams [L] after continuation through eps [E] (descending), `steps` Newton iterations each."""

  def one(lam):
    z0 = lam + 1j * eps[0]
    m0 = -1.0 / z0
    d0 = prm['psi_p'] / prm['psi_n'] * m0 * (prm['v2'] + prm['c2'] * jnp.sum(prm['sigma_weights']
                                                                          * prm['sigma_eigs']))
    x0 = jnp.stack([m0, d0])

    def cont(x, e):
      return _newton(x, lam + 1j * e, prm, steps), None

    x, _ = jax.lax.scan(cont, x0, eps)
    return x[0]

  return jax.vmap(one)(lams)


def _sigma_spectrum(sigma_eigs, sigma_weights) -> tuple[np.ndarray, np.ndarray]:
  l = np.atleast_1d(np.asarray(1.0 if sigma_eigs is None else sigma_eigs, np.float64))
  wl = np.full(l.shape, 1.0 / l.size) if sigma_weights is None else np.asarray(sigma_weights, np.float64)
  if l.ndim != 1 or wl.shape != l.shape:
    raise ValueError(f'sigma_eigs and sigma_weights must be 1-D of the same length, got {l.shape}, {wl.shape}')
  if np.any(l < 0) or np.any(wl < 0) or not wl.sum() > 0:
    raise ValueError('sigma_eigs and sigma_weights must be >= 0 with a positive total weight')
  return l, wl / wl.sum()


def stieltjes(lams: Sequence[float] | np.ndarray, coef: Coefficients, psi_p: float, psi_n: float, *,
              sigma_eigs: Sequence[float] | np.ndarray | None = None,
              sigma_weights: Sequence[float] | np.ndarray | None = None,
              eps_max: float | None = None, eps_min: float = 1e-9, num_eps: int = 48,
              newton_steps: int = 6) -> np.ndarray:
  """m(lambda + i eps_min) = Tr((U - z)^-1) / p on a grid of real lambda, complex128 [L].

  Args:
    lams: [L] real points.
    coef: the coefficients at the run's t; `coef.data_var` must equal the mean of sigma_eigs.
    sigma_eigs, sigma_weights: the spectrum of Sigma as atoms and weights (default: Sigma = data_var I).
    eps_max: start of the continuation (default: 10 x the largest scale of U); eps_min: its end.
    num_eps: geometric continuation steps; newton_steps: Newton iterations per step.
  """
  if not (psi_p > 0 and psi_n > 0):
    raise ValueError(f'psi_p and psi_n must be positive, got {psi_p}, {psi_n}')
  l, wl = _sigma_spectrum(coef.data_var if sigma_eigs is None else sigma_eigs, sigma_weights)
  lams = np.asarray(lams, np.float64)
  if eps_max is None:
    eps_max = 10.0 * (abs(lams).max() + psi_p * (coef.b ** 2 + coef.c2 * l.max()) + coef.v2 + coef.s2)
  if not 0 < eps_min < eps_max:
    raise ValueError(f'need 0 < eps_min < eps_max, got {eps_min}, {eps_max}')
  eps = np.geomspace(eps_max, eps_min, num_eps)
  with jax.enable_x64(True):
    prm = {k: jnp.asarray(v, jnp.complex128) for k, v in dict(
        s2=coef.s2, v2=coef.v2, b2=coef.b ** 2, c2=coef.c2, psi_p=psi_p, psi_n=psi_n,
        sigma_eigs=l, sigma_weights=wl).items()}
    m = _solve_grid(jnp.asarray(lams, jnp.complex128), jnp.asarray(eps, jnp.complex128), prm,
                    steps=newton_steps)
    return np.asarray(m)


def spectral_density(lams: Sequence[float] | np.ndarray, coef: Coefficients, psi_p: float, psi_n: float,
                     **kwargs) -> np.ndarray:
  """The continuous part of the density of U, rho(lambda) = Im m(lambda + i0) / pi, float64 [L].

  The point mass at s_t^2 (`point_mass`) is not part of it. kwargs: see `stieltjes`.
  """
  lams = np.asarray(lams, np.float64)
  m = stieltjes(lams, coef, psi_p, psi_n, **kwargs)
  # Remove the pole w0 / (s^2 - z) of the point mass, whose Lorentzian of width eps_min would otherwise
  # leak into the grid points next to s^2.
  z = lams + 1j * kwargs.get('eps_min', 1e-9)
  m = m - point_mass(psi_p, psi_n) / (coef.s2 - z)
  return np.maximum(m.imag / math.pi, 0.0)


def density_grid(coef: Coefficients, psi_p: float, psi_n: float, num: int = 1000, *,
                 sigma_eigs=None, upper: float | None = None) -> np.ndarray:
  """A grid of `num` points covering the continuous spectrum of U. [num] float64, ascending.

  60% of the points are log-spaced in lambda - s_t^2 from 1e-5 x to 1.2 x the closed-form upper edge of
  rho_1 (the small bulks sit just above the point mass s_t^2), the rest are linear up to `upper`
  (default: 1.5 x the scale of rho_2, psi_p (b^2 + c^2 max Sigma) (1 + 1/sqrt(psi_n))^2).
  """
  l = np.atleast_1d(np.asarray(coef.data_var if sigma_eigs is None else sigma_eigs, np.float64))
  top = psi_p * (coef.b ** 2 + coef.c2 * l.max()) * (1 + 1 / math.sqrt(psi_n)) ** 2 + coef.s2 + coef.v2
  upper = 1.5 * top if upper is None else upper
  edges = memorization_edges(coef, psi_p, psi_n)
  mid = 1.2 * edges[1] if edges is not None else coef.s2 + 0.05 * upper
  mid = min(mid, 0.5 * upper)
  n1 = int(0.6 * num)
  span = mid - coef.s2
  low = coef.s2 + np.geomspace(1e-5 * span, span, n1, endpoint=False)
  return np.concatenate([low, np.linspace(mid, upper, num - n1)])


def support_intervals(lams: np.ndarray, rho: np.ndarray, rel_tol: float = 1e-3) -> list[tuple[float, float]]:
  """Maximal runs of the grid where rho > rel_tol x max(rho), as (first, last) grid points."""
  lams, rho = np.asarray(lams), np.asarray(rho)
  on = rho > rel_tol * rho.max()
  out, start = [], None
  for i, o in enumerate(on):
    if o and start is None:
      start = i
    if not o and start is not None:
      out.append((float(lams[start]), float(lams[i - 1])))
      start = None
  if start is not None:
    out.append((float(lams[start]), float(lams[-1])))
  return out


def ks_distance(eigs: np.ndarray, grid: np.ndarray, rho: np.ndarray, lo: float, hi: float) -> float:
  """Kolmogorov-Smirnov distance between eigenvalues eigs [k] and rho restricted to [lo, hi] (normalized)."""
  e = np.sort(eigs)
  m = (grid >= lo) & (grid <= hi)
  if e.size == 0 or m.sum() < 2:
    return math.nan
  g, r = grid[m], rho[m]
  cdf = np.concatenate([[0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * np.diff(g))])
  if cdf[-1] <= 0:
    return math.nan
  th = np.interp(e, g, cdf / cdf[-1])
  k = np.arange(1, e.size + 1) / e.size
  return float(np.max(np.maximum(np.abs(k - th), np.abs(k - 1 / e.size - th))))
