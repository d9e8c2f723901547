"""Paper 3's family: class-conditional rectified-flow U-Nets on images (SPEC section 5), solo runs and vectorized
ensembles.

    python -m jaxdiff.main --config=configs/cifar10_flow.py --workdir=DIR
    python -m jaxdiff.main --config=configs/cifar10_flow.py:cpu --workdir=DIR     # digits, N x B grid, 2-core CPU

Data: as the DDPM family (jaxdiff.experiments.unet): the first `data.n` images and their labels, `data.n_test`
held-out ones. Model: the U-Net of `config.model` (jaxdiff.models.unet; paper 3's ADM-style fields in
configs/cifar10_flow.py) predicting the velocity eps - x_0 of x_t = (1 - t) x_0 + t eps
(jaxdiff.diffusion.rectified_flow), with t drawn from `flow.t_distribution`. The network sees
`TIME_SCALE` x t in its sinusoidal embedding (the range of DDPM's steps, so both families use the same
frequencies). With `model.num_classes` > 0 it is class-conditional on the data's labels; `flow.label_dropout`
replaces a label by the null class (index num_classes) in training, and sampling uses classifier-free guidance
of weight `flow.guidance` (0: the conditional field, paper 3) with balanced labels 0, 1, ..., C-1, 0, ...
Samples: Euler in `flow.sample_steps` steps (250) from t = 1 to 0. The 'losses' evaluator measures the
conditional velocity loss at flow time `flow.loss_t` (default: the time with the signal-to-noise ratio of
`eval.loss_t_ou`). Evaluation uses the EMA weights when `optimizer.ema_decay` > 0 (paper 3: 0.9999).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxdiff.config import require
from jaxdiff.diffusion import rectified_flow as rf
from jaxdiff.experiments.unet import ImageFamily, UNetExperiment, validate_network

TIME_SCALE = 1000.0


class Flow(ImageFamily):
  """The velocity-predicting U-Net under rectified flow, as the shared trainers and evaluators use it."""

  def __init__(self, config: ml_collections.ConfigDict, data_shape: tuple[int, ...]):
    super().__init__(config, data_shape)
    self.section = config.flow
    self.num_classes = config.model.num_classes

  def _velocity(self, model, *, train: bool = False, key=None):
    """v(x [B, H, W, C], t [B], y [B] | None) -> [B, H, W, C]; y is ignored by an unconditional model."""
    conditional = self.num_classes > 0
    return lambda x, t, y: model(x, TIME_SCALE * t, y if conditional else None, train=train, key=key)

  def losses(self, model, batch, key, *, train: bool):
    """Per-example training losses [B] (an ensemble member weights them to mask its padding)."""
    k_loss, k_drop, k_null = jax.random.split(key, 3)
    y = batch.get('y')
    if self.num_classes > 0 and self.section.label_dropout > 0:
      dropped = jax.random.bernoulli(k_null, self.section.label_dropout, y.shape)
      y = jnp.where(dropped, self.num_classes, y)
    v = self._velocity(model, train=train, key=k_drop)
    s = self.section
    return rf.losses(lambda x, t: v(x, t, y), batch['x'], k_loss, distribution=s.t_distribution, loc=s.t_loc,
                     scale=s.t_scale)

  def loss_time(self, t_ou: float) -> float:
    """The flow time of the 'losses' evaluator: `flow.loss_t`, or the time with the SNR of OU time t_ou."""
    return self.section.loss_t if self.section.loss_t >= 0 else rf.time_from_ou(t_ou)

  def loss_at(self, model, x, t, key, y=None):
    """Per-example velocity MSE [B] at flow times t [B], without dropout, conditional on the labels y."""
    v = self._velocity(model)
    return rf.loss_at(lambda x_t, t_: v(x_t, t_, y), x, t, key)

  def sample(self, model, key, num: int, y=None):
    """[num, H, W, C] samples by Euler steps; labels y [num] (default balanced 0, 1, ..., C-1, 0, ...)."""
    v = self._velocity(model)
    if self.num_classes > 0:
      y = jnp.arange(num, dtype=jnp.int32) % self.num_classes if y is None else y
      field = rf.guided(v, y, self.num_classes, self.section.guidance)
    else:
      field = lambda x, t: v(x, t, None)   # noqa: E731
    return rf.sample(field, (num, *self.data_shape), key, self.section.sample_steps)


class FlowExperiment(UNetExperiment):
  """Family 'flow': rectified-flow U-Nets on images (paper 3)."""

  section = 'flow'

  def default_section(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        t_distribution='uniform',  # training times: 'uniform' in (0, 1) or 'logit_normal' sigmoid(loc + scale z)
        t_loc=0.0,                 # logit-normal location and scale
        t_scale=1.0,
        sample_steps=250,          # Euler steps from t = 1 to 0 (paper 3: 250)
        guidance=0.0,              # classifier-free guidance weight w (paper 3: 0, conditional and unguided)
        label_dropout=0.0,         # probability of training on the null label (needed for guidance > 0)
        loss_t=-1.0,               # flow time of the 'losses' evaluator; -1: the SNR of eval.loss_t_ou
    ))

  def validate(self, config: ml_collections.ConfigDict) -> None:
    validate_network(config, self.metrics(config))
    f, m = config.flow, config.model
    require(f.t_distribution in rf.T_DISTRIBUTIONS, 'flow.t_distribution',
            f'must be one of {rf.T_DISTRIBUTIONS}, got {f.t_distribution!r}')
    require(f.t_scale > 0, 'flow.t_scale', f'must be positive, got {f.t_scale}')
    require(f.sample_steps >= 1, 'flow.sample_steps', f'must be >= 1, got {f.sample_steps}')
    require(f.guidance >= 0, 'flow.guidance', f'must be >= 0, got {f.guidance}')
    require(0 <= f.label_dropout < 1, 'flow.label_dropout', f'must be in [0, 1), got {f.label_dropout}')
    require(f.loss_t == -1 or 0 < f.loss_t <= 1, 'flow.loss_t', f'must be -1 or in (0, 1], got {f.loss_t}')
    if f.guidance > 0:
      require(m.num_classes > 0, 'flow.guidance', 'guidance needs a class-conditional model (model.num_classes > 0)')
      require(f.label_dropout > 0, 'flow.label_dropout',
              f'guidance {f.guidance} needs a trained null label: label_dropout must be > 0')

  def build_family(self, config: ml_collections.ConfigDict, data) -> Flow:
    return Flow(config, data.train.shape[1:])


EXPERIMENT = FlowExperiment()

__all__ = ['Flow', 'FlowExperiment', 'EXPERIMENT', 'TIME_SCALE']
