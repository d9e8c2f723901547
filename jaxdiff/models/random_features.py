"""The random-features score model of paper 1 (section 3 of SPEC.md): model, data, losses, three trainers.

    s_A(x) = A sigma(W x / sqrt(d)) / sqrt(p),   W [p, d] i.i.d. N(0, 1) frozen,   A [d, p] trained from 0,

at one OU diffusion time t: x_t = e^-t x + sqrt(Delta_t) xi, Delta_t = 1 - e^-2t (`jaxdiff.diffusion.ou`). On n
training points the denoising loss (divided by d) is quadratic in A,

    L(A) = c0 + (Delta_t / (d p)) Tr(A U A^T) + (2 sqrt(Delta_t) / (d sqrt(p))) Tr(A V),        (1)

with U = (1/n) sum_nu E_xi[f f^T] [p, p], V = (1/n) sum_nu E_xi[f xi^T] [p, d], f = sigma(W x_t / sqrt(d)),
c0 = E||xi||^2 / d = 1. `nested_moments` estimates U, V either with `num_noise_draws` Monte Carlo draws of
xi per point (c0 is then the empirical noise energy, and (1) is the loss actually minimized) or, with
num_noise_draws = 0, exactly: given the clean point, the pre-activations of features i and j are Gaussian
with correlation rho_ij = (W W^T)_ij / (|w_i| |w_j|), so Mehler's formula
E[F(z_i) G(z_j)] = sum_k rho_ij^k / k! E[F He_k] E[G He_k] turns E_xi[f_i f_j] into a short sum of
Gauss-Hermite coefficients (|rho_ij| ~ d^-1/2 off the diagonal and the k-th coefficient carries
Delta_t^(k/2), so order 8 is exact to float32; the diagonal is computed exactly), and E_xi[f xi^T] follows
from Stein's lemma.

Training time is tau = k eta / d^2 for k steps of gradient descent with learning rate eta on (1), so the
gradient flow is dA/dtau = -d^2 grad L and, from A = 0, in the eigenbasis U = Q diag(lambda) Q^T,

    A(tau) = -(sqrt(p) / sqrt(Delta_t)) V^T Q diag(g(tau)) Q^T,   g_j = (1 - exp(-2 Delta_t lambda_j tau / psi_p)) / lambda_j.

Every loss is then a function of g alone (`solve_flow`, `flow_losses`): with B = V^T Q [d, p],
L_train = c0 + (1/d) sum_j |B_j|^2 (lambda_j g_j^2 - 2 g_j), and on N fresh test points with features
Phi = Q^T F_test^T [p, N], L_test = |B diag(g) Phi - Xi^T|^2 / (d N) is a quadratic form in g whose matrix
(B^T B) o (Phi Phi^T) is computed once. The score error E_score = (1/d) E|s_A(x_t) - grad log P_t(x_t)|^2
(x_t ~ P_t, Gaussian data: grad log P_t(x) = -(e^-2t Sigma + Delta_t)^-1 x) has the same form with Xi
replaced by sqrt(Delta_t) (e^-2t Sigma + Delta_t)^-1 x_t and a factor 1 / Delta_t.

The three trainers share these definitions: `flow_losses` (exact gradient flow at any set of times, no
iteration), `descent_losses` with optimizer 'gd' (plain gradient descent, checks the flow) or 'adam'.
All functions take one problem and are `vmap`-able over a leading batch axis (seeds, psi_n, t).
The eigendecomposition of U runs in float64 (`jax.enable_x64`): the memorization modes have eigenvalues
~1e-2 next to a bulk at ~psi_p and a point mass at s_t^2 ~ 1e-4, and their eigenvectors drive L_gen.
Everything else is float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.diffusion import ou

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
    'erf': jax.scipy.special.erf,
    'sigmoid': jax.nn.sigmoid,
    'linear': lambda x: x,
}
TRAINERS = ('exact', 'gd', 'adam')


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"config field 'rf.activation': unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


# ----------------------------------------------------------------------------------------------------------
# Data and model


def covariance_diagonal(d: int, sigma_x: float = 1.0, spectrum: Sequence[float] = (),
                        fraction: float = 0.5) -> np.ndarray:
  """Eigenvalues of Sigma (diagonal): sigma_x^2 everywhere, or a two-level spectrum. [d] float32.

  spectrum = (l1, l2): the first round(fraction d) coordinates have variance l1, the others l2.
  """
  if d < 1:
    raise ValueError(f'd must be >= 1, got {d}')
  if not spectrum:
    return np.full((d,), sigma_x ** 2, np.float32)
  if len(spectrum) != 2 or min(spectrum) <= 0:
    raise ValueError(f'spectrum must be () or two positive variances (l1, l2), got {tuple(spectrum)}')
  k = int(round(fraction * d))
  return np.concatenate([np.full((k,), spectrum[0]), np.full((d - k,), spectrum[1])]).astype(np.float32)


def sample_gaussian(key: jax.Array, n: int, var_diag: jax.Array) -> jax.Array:
  """n points of N(0, diag(var_diag)). [n, d]."""
  return jax.random.normal(key, (n, var_diag.shape[0]), jnp.float32) * jnp.sqrt(var_diag)


def true_score(x_t: jax.Array, t: float | jax.Array, var_diag: jax.Array) -> jax.Array:
  """grad log P_t for data N(0, diag(var_diag)): -x_t / (e^-2t var + Delta_t). x_t: [N, d]."""
  return -x_t / ou.marginal_variance(t, var_diag)


def init_features(key: jax.Array, p: int, d: int) -> jax.Array:
  """The frozen first layer W [p, d], i.i.d. N(0, 1)."""
  return jax.random.normal(key, (p, d), jnp.float32)


def features(w: jax.Array, x: jax.Array, activation: str = 'tanh') -> jax.Array:
  """f = sigma(W x / sqrt(d)). w: [p, d], x: [N, d] -> [N, p]."""
  return activation_fn(activation)(x @ w.T / math.sqrt(w.shape[1]))


def score(a: jax.Array, w: jax.Array, x: jax.Array, activation: str = 'tanh') -> jax.Array:
  """s_A(x) = A f / sqrt(p). a: [d, p], x: [N, d] -> [N, d]."""
  return features(w, x, activation) @ a.T / math.sqrt(w.shape[0])


def dsm_loss(a: jax.Array, w: jax.Array, x0: jax.Array, xi: jax.Array, t: float,
             activation: str = 'tanh') -> jax.Array:
  """(1/(N d)) sum |sqrt(Delta_t) s_A(x_t) + xi|^2 on explicit points and noise (the definition of (1))."""
  r = jnp.sqrt(ou.delta(t)) * score(a, w, ou.noise(x0, t, xi), activation) + xi
  return jnp.mean(jnp.sum(r * r, -1)) / w.shape[1]


# ----------------------------------------------------------------------------------------------------------
# Moments U, V of the training loss


def gauss_hermite(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights with sum_i w_i f(z_i) ~ E[f(z)], z ~ N(0, 1) (probabilists' Hermite). [Q], [Q]."""
  if num_nodes < 2:
    raise ValueError(f'num_nodes must be >= 2, got {num_nodes}')
  z, w = np.polynomial.hermite_e.hermegauss(num_nodes)
  return z, w / math.sqrt(2 * math.pi)


def _hermite_table(z: np.ndarray, order: int) -> np.ndarray:
  """He_k(z) for k = 0..order (probabilists'). [order + 1, Q]."""
  he = [np.ones_like(z), z]
  for k in range(1, order):
    he.append(z * he[k] - k * he[k - 1])
  return np.stack(he[:order + 1])


def _exact_chunk(w, x, wt, t, act, order, nodes):
  """Unnormalized sums over a chunk of clean points x [c, d] (weights wt [c]) of E_xi[f f^T], E_xi[f xi^T]."""
  p, d = w.shape
  z, gw = gauss_hermite(nodes)
  he_w = jnp.asarray(_hermite_table(z, order) * gw, jnp.float32)          # [K+1, Q]
  q = jnp.sum(w * w, 1) / d                                                # Var(w_i . xi / sqrt(d)) [p]
  alpha = x @ w.T / math.sqrt(d)                                           # [c, p]
  pre = (ou.mean_coef(t) * alpha)[..., None] + jnp.sqrt(ou.delta(t) * q)[None, :, None] * jnp.asarray(z, jnp.float32)
  sv = act(pre)                                                            # [c, p, Q]
  ck = jnp.einsum('cpq,kq->kcp', sv, he_w)                                  # E_z[f He_k(z)] [K+1, c, p]
  second = jnp.einsum('cpq,q->p', sv * sv * wt[:, None, None], jnp.asarray(gw, jnp.float32))
  gram = w @ w.T / d
  rho = gram / jnp.sqrt(q[:, None] * q[None, :])
  u = jnp.zeros((p, p), jnp.float32)
  rk = jnp.ones_like(rho)
  for k in range(order + 1):  # Mehler: sum_k rho^k / k! c_k c_k^T
    ckw = ck[k] * wt[:, None]
    u = u + rk * (ckw.T @ ck[k]) / math.factorial(k)
    rk = rk * rho
  u = u.at[jnp.diag_indices(p)].set(second)  # the diagonal exactly: E_xi[f_i^2]
  # Stein: E_xi[f_i xi] = w_i / (sqrt(d) q_i) E[f_i beta_i], beta_i = w_i . xi / sqrt(d) = sqrt(q_i) z.
  c1 = jnp.sum(ck[1] * wt[:, None], 0) / jnp.sqrt(q)                       # [p]
  v = c1[:, None] * w / math.sqrt(d)
  return u, v, jnp.sum(wt) * 1.0


def _mc_chunk(w, x, wt, key, t, act, draws):
  """Unnormalized Monte Carlo sums over a chunk with `draws` noise draws per point."""
  c, d = x.shape
  xi = jax.random.normal(key, (c, draws, d), jnp.float32)
  f = act(ou.noise(x[:, None, :], t, xi) @ w.T / math.sqrt(d)) * jnp.sqrt(wt)[:, None, None]
  xi_w = xi * jnp.sqrt(wt)[:, None, None]
  f, xi_w = f.reshape(c * draws, -1), xi_w.reshape(c * draws, d)
  return f.T @ f / draws, f.T @ xi_w / draws, jnp.sum(xi_w * xi_w) / (draws * d)


@flax.struct.dataclass
class Moments:
  u: jax.Array    # [p, p] U
  v: jax.Array    # [p, d] V
  c0: jax.Array   # scalar: the constant of (1)


def _chunking(n_list: Sequence[int], chunk: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
  """Split the blocks n_{l-1}..n_l into equal chunks of c <= chunk points (padded at each block's end).

  Returns c, the first point of every chunk [C], its number of real points [C] and its block [C].
  """
  sizes = np.diff([0] + list(n_list))
  smallest = int(sizes[sizes > 0].min())
  c = -(-smallest // -(-smallest // chunk))   # the smallest block in equal pieces of <= chunk points
  starts, counts, blocks = [], [], []
  for l, (lo, size) in enumerate(zip([0] + list(n_list[:-1]), sizes)):
    for j in range(-(-int(size) // c)):
      starts.append(lo + j * c)
      counts.append(min(c, size - j * c))
      blocks.append(l)
  return c, np.asarray(starts), np.asarray(counts), np.asarray(blocks)


def nested_moments(w: jax.Array, x0: jax.Array, n_list: Sequence[int], t: float | jax.Array, key: jax.Array,
                   *, activation: str = 'tanh', num_noise_draws: int = 0, hermite_order: int = 8,
                   quadrature_nodes: int = 32, chunk: int = 256) -> Moments:
  """U, V, c0 of (1) for the nested training sets x0[:n] of every n in n_list (strictly ascending).

  One scan over x0 [>= n_max, d] in chunks of <= `chunk` points keeps a running sum and stores it at the
  end of each block, so the cost is that of the largest n alone. Noise draws are keyed by the chunk's
  first point, so nested sets share them. Returns Moments with a leading axis [len(n_list)].
  """
  n_list = [int(n) for n in n_list]
  if not n_list or any(b <= a for a, b in zip(n_list, n_list[1:])) or n_list[0] < 1 or n_list[-1] > x0.shape[0]:
    raise ValueError(f'n_list must be strictly ascending in 1..{x0.shape[0]}, got {n_list}')
  act = activation_fn(activation)
  p, d = w.shape
  c, starts, counts, blocks = _chunking(n_list, chunk)
  last = np.append(blocks[1:] != blocks[:-1], True)             # the chunk that closes its block
  idx = np.minimum(starts[:, None] + np.arange(c)[None, :], n_list[-1] - 1)
  xs = x0[jnp.asarray(idx)]                                        # [C, c, d]
  wts = jnp.asarray((np.arange(c)[None, :] < counts[:, None]).astype(np.float32))

  def body(carry, inp):
    run, out = carry
    xc, wc, i0, blk, is_last = inp
    if num_noise_draws > 0:
      part = _mc_chunk(w, xc, wc, jax.random.fold_in(key, i0), t, act, num_noise_draws)
    else:
      part = _exact_chunk(w, xc, wc, t, act, hermite_order, quadrature_nodes)
    run = jax.tree.map(jnp.add, run, part)
    out = jax.tree.map(lambda o, r: o.at[blk].set(jnp.where(is_last, r, o[blk])), out, run)
    return (run, out), None

  zeros = (jnp.zeros((p, p), jnp.float32), jnp.zeros((p, d), jnp.float32), jnp.zeros((), jnp.float32))
  out0 = jax.tree.map(lambda z: jnp.zeros((len(n_list),) + z.shape, z.dtype), zeros)
  (_, (u, v, c0)), _ = jax.lax.scan(body, (zeros, out0), (xs, wts, jnp.asarray(starts), jnp.asarray(blocks),
                                                          jnp.asarray(last)))
  n = jnp.asarray(n_list, jnp.float32)
  c0 = c0 / n if num_noise_draws > 0 else jnp.ones_like(n)
  return Moments(u=u / n[:, None, None], v=v / n[:, None, None], c0=c0)


# ----------------------------------------------------------------------------------------------------------
# A training problem and its losses


@flax.struct.dataclass
class Problem:
  """Everything the trainers need for one model (leading batch axes allowed)."""
  u: jax.Array        # [p, p]
  v: jax.Array        # [p, d]
  c0: jax.Array       # scalar
  delta: jax.Array    # scalar Delta_t
  f_test: jax.Array   # [N, p] features of fresh noisy points x_t
  y_test: jax.Array   # [N, d] their noise xi
  y_score: jax.Array  # [N, d] sqrt(Delta_t) (e^-2t Sigma + Delta_t)^-1 x_t (NaN when the score is unknown)
  # Control variates: |Y|^2 / (N d) minus its exact expectation, subtracted from the test losses (unbiased,
  # and L_test(A = 0) = 1, E_score(A = 0) = Tr((e^-2t Sigma + Delta_t)^-1) / d exactly).
  test_offset: jax.Array   # scalar
  score_offset: jax.Array  # scalar


def make_problem(moments: Moments, w: jax.Array, x0_test: jax.Array, xi_test: jax.Array, t: float,
                 activation: str = 'tanh', var_diag: jax.Array | None = None) -> Problem:
  """Attach the test set (clean points x0_test [N, d], noise xi_test [N, d]) to the training moments."""
  x_t = ou.noise(x0_test, t, xi_test)
  delta = ou.delta(t)
  if var_diag is None:
    y_score = jnp.full_like(x_t, jnp.nan)
    score_offset = jnp.float32(jnp.nan)
  else:
    y_score = -jnp.sqrt(delta) * true_score(x_t, t, var_diag)
    exact = jnp.mean(delta / ou.marginal_variance(t, var_diag))   # E|Y_score|^2 / d
    score_offset = jnp.sum(y_score ** 2) / y_score.size - exact
  test_offset = jnp.sum(xi_test ** 2) / xi_test.size - 1.0
  lead = moments.c0.shape
  bcast = lambda a: jnp.broadcast_to(a, lead + jnp.shape(a))
  return Problem(u=moments.u, v=moments.v, c0=moments.c0, delta=bcast(delta),
                 f_test=bcast(features(w, x_t, activation)), y_test=bcast(xi_test), y_score=bcast(y_score),
                 test_offset=bcast(test_offset), score_offset=bcast(score_offset))


def train_loss(a: jax.Array, prob: Problem) -> jax.Array:
  """(1) from the moments. a: [d, p]."""
  d, p = a.shape
  return (prob.c0 + prob.delta / (d * p) * jnp.sum((a @ prob.u) * a)
          + 2 * jnp.sqrt(prob.delta) / (d * math.sqrt(p)) * jnp.sum(a * prob.v.T))


def _residual_loss(a, prob, y):
  d, p = a.shape
  r = jnp.sqrt(prob.delta) * prob.f_test @ a.T / math.sqrt(p) + y
  return jnp.mean(jnp.sum(r * r, -1)) / d


def test_loss(a: jax.Array, prob: Problem) -> jax.Array:
  """(1/(N d)) sum |sqrt(Delta_t) s_A(x_t) + xi|^2 on the fresh test points (minus the control variate)."""
  return _residual_loss(a, prob, prob.y_test) - prob.test_offset


def score_error(a: jax.Array, prob: Problem) -> jax.Array:
  """E_score = (1/(N d)) sum |s_A(x_t) - grad log P_t(x_t)|^2 on the test points (x_t ~ P_t)."""
  return (_residual_loss(a, prob, prob.y_score) - prob.score_offset) / prob.delta


def losses(a: jax.Array, prob: Problem) -> dict[str, jax.Array]:
  lt, le = train_loss(a, prob), test_loss(a, prob)
  return {'loss_train': lt, 'loss_test': le, 'loss_gen': le - lt, 'e_score': score_error(a, prob)}


def grad_train_loss(a: jax.Array, prob: Problem) -> jax.Array:
  """grad_A (1) = (2 Delta / (d p)) A U + (2 sqrt(Delta) / (d sqrt(p))) V^T. [d, p]."""
  d, p = a.shape
  return 2 * prob.delta / (d * p) * a @ prob.u + 2 * jnp.sqrt(prob.delta) / (d * math.sqrt(p)) * prob.v.T


# ----------------------------------------------------------------------------------------------------------
# Trainer 1: the exact gradient flow


@flax.struct.dataclass
class FlowSolution:
  lam: jax.Array       # [p] eigenvalues of U (ascending)
  beta: jax.Array      # [p] |B_j|^2, B = V^T Q
  quad: jax.Array      # [p, p] (B^T B) o (Phi Phi^T) / (d N)
  lin_test: jax.Array  # [p] (1/(d N)) sum_mu (B^T Xi^T)_{j mu} Phi_{j mu}
  lin_score: jax.Array  # [p] the same with Y_score
  const_test: jax.Array  # |Xi|^2 / (d N)
  const_score: jax.Array
  c0: jax.Array
  delta: jax.Array
  rate: jax.Array      # 2 Delta_t / psi_p: mode j relaxes as exp(-rate lambda_j tau)
  inv_d: jax.Array     # 1 / d


def eigh64(u: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eigendecomposition of symmetric U [..., p, p] in float64; returns float32 (lam [..., p], Q [..., p, p])."""
  with jax.enable_x64(True):
    lam, q = jnp.linalg.eigh(u.astype(jnp.float64), symmetrize_input=True)
  return lam.astype(jnp.float32), q.astype(jnp.float32)


def eigvalsh64(u: jax.Array) -> jax.Array:
  """Eigenvalues (ascending) of symmetric U [..., p, p], computed in float64, returned float32."""
  with jax.enable_x64(True):
    return jnp.linalg.eigvalsh(u.astype(jnp.float64)).astype(jnp.float32)


def solve_flow(prob: Problem, eig: tuple[jax.Array, jax.Array] | None = None) -> FlowSolution:
  """Diagonalize U (float64) and precompute the quadratic forms of every loss along the flow.

  eig: a precomputed (lam, Q) of prob.u (e.g. from a batched, sharded `eigh64`).
  """
  p, d = prob.v.shape
  n_test = prob.f_test.shape[0]
  lam, q = eigh64(prob.u) if eig is None else eig
  b = prob.v.T @ q                                    # [d, p]
  phi = q.T @ prob.f_test.T                           # [p, N]
  bt_y = b.T @ prob.y_test.T                          # [p, N]
  bt_s = b.T @ jnp.nan_to_num(prob.y_score).T
  scale = 1.0 / (d * n_test)
  nan = jnp.where(jnp.isnan(prob.y_score).any(), jnp.nan, 0.0)
  return FlowSolution(
      lam=lam, beta=jnp.sum(b * b, 0), quad=(b.T @ b) * (phi @ phi.T) * scale,
      lin_test=jnp.sum(bt_y * phi, 1) * scale, lin_score=jnp.sum(bt_s * phi, 1) * scale + nan,
      const_test=jnp.sum(prob.y_test ** 2) * scale - prob.test_offset,
      const_score=jnp.sum(jnp.nan_to_num(prob.y_score) ** 2) * scale - prob.score_offset,
      c0=prob.c0, delta=prob.delta, rate=2 * prob.delta * d / p, inv_d=jnp.float32(1.0 / d))


def flow_weights(sol: FlowSolution, taus: jax.Array) -> jax.Array:
  """g_j(tau) = (1 - exp(-rate lambda_j tau)) / lambda_j (-> rate tau as lambda_j -> 0). [T, p]."""
  x = sol.rate * sol.lam[None, :] * taus[:, None]
  small = jnp.abs(x) < 1e-6
  safe_lam = jnp.where(small, 1.0, sol.lam[None, :])
  return jnp.where(small, sol.rate * taus[:, None] * (1 - 0.5 * x), -jnp.expm1(-x) / safe_lam)


def _flow_train_test(sol: FlowSolution, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(L_train, L_test, the quadratic form g^T quad g) for mode weights g [T, p]."""
  l_train = sol.c0 + sol.inv_d * jnp.sum(sol.beta * (sol.lam * g * g - 2 * g), -1)
  quad = jnp.sum((g @ sol.quad) * g, -1)
  return l_train, quad - 2 * g @ sol.lin_test + sol.const_test, quad


def flow_losses(sol: FlowSolution, taus: jax.Array, top: int | jax.Array | None = None) -> dict[str, jax.Array]:
  """L_train, L_test, L_gen, E_score along the exact gradient flow from A = 0 at times taus [T]. Each [T].

  top: also 'loss_gen_modes', L_gen of the flow restricted to the `top` largest eigenmodes of U (the others
  held at A = 0): with top = n it reads the generalization gap on the n modes that carry the data (the
  generalization bulk and the memorization bulk), without the slow modes below the memorization bulk (the
  weight-d/p bulk near s_t^2 and the spread point mass), which relax on psi_p / (2 Delta_t s_t^2) whatever n
  and dominate L_gen at late times.
  """
  g = flow_weights(sol, jnp.asarray(taus, jnp.float32))
  l_train, l_test, quad = _flow_train_test(sol, g)
  e_score = (quad - 2 * g @ sol.lin_score + sol.const_score) / sol.delta
  out = {'loss_train': l_train, 'loss_test': l_test, 'loss_gen': l_test - l_train, 'e_score': e_score}
  if top is not None:
    p = sol.lam.shape[0]
    top_train, top_test, _ = _flow_train_test(sol, g * (jnp.arange(p) >= p - top))   # lam ascending
    out['loss_gen_modes'] = top_test - top_train
  return out


def flow_params(prob: Problem, tau: float | jax.Array, eig=None) -> jax.Array:
  """A(tau) of the exact flow (for checks and sampling). [d, p]."""
  p = prob.u.shape[0]
  lam, q = eigh64(prob.u) if eig is None else eig
  d = prob.v.shape[1]
  sol_rate = 2 * prob.delta * d / p
  x = sol_rate * lam * tau
  g = jnp.where(jnp.abs(x) < 1e-6, sol_rate * tau, -jnp.expm1(-x) / jnp.where(jnp.abs(x) < 1e-6, 1.0, lam))
  return -(math.sqrt(p) / jnp.sqrt(prob.delta)) * ((prob.v.T @ q) * g) @ q.T


# ----------------------------------------------------------------------------------------------------------
# Trainers 2 and 3: gradient descent and Adam on (1)


def stable_learning_rate(prob: Problem, fraction: float = 0.5) -> jax.Array:
  """fraction x the largest stable GD step, 2 / (largest Hessian eigenvalue 2 Delta lambda_max / (d p))."""
  p, d = prob.v.shape
  lam_max = jnp.linalg.eigvalsh(prob.u)[-1]
  return fraction * d * p / (prob.delta * lam_max)


def descent_losses(prob: Problem, learning_rate: float, eval_steps: Sequence[int] | np.ndarray, *,
                   optimizer: str = 'gd', b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                   ) -> dict[str, jax.Array]:
  """Run 'gd' or 'adam' on (1) from A = 0, evaluating the losses after each of eval_steps [T] (ascending).

  The losses are computed from A directly (`losses`), independently of the flow's eigenbasis.
  Returns the losses [T] and 'tau' = steps * eta / d^2 [T].
  """
  p, d = prob.v.shape
  steps = np.asarray(eval_steps, np.int64)
  if steps.ndim != 1 or steps.size == 0 or np.any(np.diff(steps) <= 0) or steps[0] < 0:
    raise ValueError(f'eval_steps must be strictly increasing and >= 0, got {steps}')
  if optimizer == 'gd':
    tx = optax.sgd(learning_rate)
  elif optimizer == 'adam':
    tx = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  else:
    raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
  a0 = jnp.zeros((d, p), jnp.float32)
  gaps = jnp.asarray(np.diff(steps, prepend=0), jnp.int32)

  def segment(carry, gap):
    def one(_, c):
      a, st = c
      upd, st = tx.update(grad_train_loss(a, prob), st, a)
      return optax.apply_updates(a, upd), st
    carry = jax.lax.fori_loop(0, gap, one, carry)
    return carry, losses(carry[0], prob)

  _, out = jax.lax.scan(segment, (a0, tx.init(a0)), gaps)
  out['tau'] = jnp.asarray(steps, jnp.float32) * learning_rate / d ** 2
  return out


def steps_for_times(taus: Sequence[float] | np.ndarray, learning_rate: float, d: int) -> np.ndarray:
  """The distinct step counts k = round(tau d^2 / eta) >= 1 that realize the times taus (ascending)."""
  k = np.maximum(1, np.round(np.asarray(taus, np.float64) * d * d / learning_rate)).astype(np.int64)
  return np.unique(k)
