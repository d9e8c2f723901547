"""The configuration schema: every field jaxdiff reads, its default, and the checks on it.

Config files in `configs/` start from `default_config()` and override fields; `validate` rejects fields the
schema does not know, values of the wrong type and values out of range, naming the field.
"""

from __future__ import annotations

from typing import Any

import ml_collections

FAMILIES = ('ddpm',)
MODELS = ('unet',)
OPTIMIZERS = ('sgd', 'adam')
CENTERINGS = ('pixel', 'image', 'none')


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.family = 'ddpm'

  c.data = ml_collections.ConfigDict(dict(
      name='digits',       # embedded MNIST digits (no download); or mnist, cifar10, celeb_a (TFDS)
      n=1024,              # training-set size
      block=0,             # training set = images[block * n:(block + 1) * n]
      n_test=2048,         # held-out test images
      image_size=32,
      grayscale=True,
      center_crop=False,   # crop the largest centred square before resizing (CelebA)
      centering='pixel',   # subtract the training mean: scalar ('pixel'), per pixel ('image'), or 'none'
      scale=1.0,           # x = scale * pixels_in_[0, 1], then centred
      data_dir='',         # TFDS data_dir ('' = TFDS default)
      cache_dir='',        # prepared-array cache ('' = ~/.cache/jaxdiff)
  ))

  c.model = ml_collections.ConfigDict(dict(
      name='unet',
      width=32,
      channel_mult=(1, 2, 4),
      num_res_blocks=2,
      attention_resolutions=(16, 8),
      num_heads=4,
      dropout=0.1,
      groups=8,
      num_classes=0,       # > 0: class-conditional (labels from the data set)
  ))

  c.diffusion = ml_collections.ConfigDict(dict(
      num_steps=1000,
      beta_min=1e-4,
      beta_max=0.02,
      sampler='ddim',
      sample_steps=100,
      eta=0.0,
      clip_denoised=True,  # clip the sampler's x0 estimates to the data range (Ho et al. 2020)
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      name='sgd',
      learning_rate=0.01,
      momentum=0.95,       # sgd
      b1=0.9,              # adam
      b2=0.999,
      eps=1e-8,
      grad_clip=0.0,       # > 0: clip the global gradient norm
      ema_decay=0.0,       # > 0: keep an exponential moving average of the parameters
  ))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=100_000,
      batch_size=512,          # the effective batch is min(data.n, batch_size)
      steps_per_dispatch=32,   # train steps per compiled call (lax loop)
      log_every=100,
      checkpoint_every=5000,   # the latest checkpoint; milestone checkpoints are kept as well
      num_milestones=40,       # log-spaced milestones (checkpoints, evaluation)
      keep_milestone_checkpoints=True,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      num_samples=64,          # samples in the final sample grid
  ))

  c.mesh = ml_collections.ConfigDict(dict(
      data=-1,                 # data-parallel devices; -1 = all
  ))
  return c


def _check_fields(cfg: Any, ref: Any, prefix: str) -> None:
  for key in cfg.keys():
    name = f'{prefix}{key}'
    if key not in ref:
      known = ', '.join(sorted(f'{prefix}{k}' for k in ref.keys()))
      raise ValueError(f'unknown config field {name!r}; known fields here: {known}')
    value, default = cfg[key], ref[key]
    if isinstance(default, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ValueError(f'config field {name!r} must be a group of fields, got {value!r}')
      _check_fields(value, default, name + '.')
      continue
    ok = (isinstance(value, type(default))
          or (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
          or (isinstance(default, (tuple, list)) and isinstance(value, (tuple, list))))
    if isinstance(default, int) and isinstance(value, bool) and not isinstance(default, bool):
      ok = False
    if not ok:
      raise ValueError(f'config field {name!r} must be of type {type(default).__name__}, '
                       f'got {type(value).__name__} {value!r}')


def _require(cond: bool, field: str, msg: str) -> None:
  if not cond:
    raise ValueError(f'config field {field!r}: {msg}')


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the first bad field. num_devices: devices available for the mesh."""
  _check_fields(config, default_config(), '')
  d, m, df, o, t = config.data, config.model, config.diffusion, config.optimizer, config.train
  _require(config.family in FAMILIES, 'family', f'must be one of {FAMILIES}, got {config.family!r}')
  for field, value in [('data.n', d.n), ('data.image_size', d.image_size), ('model.width', m.width),
                       ('model.num_res_blocks', m.num_res_blocks), ('model.num_heads', m.num_heads),
                       ('model.groups', m.groups), ('train.num_steps', t.num_steps),
                       ('train.batch_size', t.batch_size), ('train.steps_per_dispatch', t.steps_per_dispatch),
                       ('train.log_every', t.log_every), ('train.checkpoint_every', t.checkpoint_every),
                       ('diffusion.sample_steps', df.sample_steps), ('eval.num_samples', config.eval.num_samples)]:
    _require(value > 0, field, f'must be positive, got {value}')
  _require(d.n_test >= 0, 'data.n_test', f'must be >= 0, got {d.n_test}')
  _require(d.block >= 0, 'data.block', f'must be >= 0, got {d.block}')
  _require(d.centering in CENTERINGS, 'data.centering', f'must be one of {CENTERINGS}, got {d.centering!r}')
  _require(d.scale > 0, 'data.scale', f'must be positive, got {d.scale}')
  _require(m.name in MODELS, 'model.name', f'must be one of {MODELS}, got {m.name!r}')
  _require(len(m.channel_mult) >= 1 and all(x > 0 for x in m.channel_mult), 'model.channel_mult',
           f'must be a non-empty tuple of positive ints, got {m.channel_mult}')
  for mult in m.channel_mult:
    ch = m.width * mult
    _require(ch % m.groups == 0, 'model.groups',
             f'{m.groups} groups do not divide the {ch} channels of a level (width {m.width} x {mult})')
    _require(ch % m.num_heads == 0, 'model.num_heads',
             f'{m.num_heads} heads do not divide the {ch} channels of a level')
  down = 2 ** (len(m.channel_mult) - 1)
  _require(d.image_size % down == 0, 'data.image_size',
           f'{d.image_size} is not divisible by {down}, the downsampling of {len(m.channel_mult)} levels')
  _require(0.0 <= m.dropout < 1.0, 'model.dropout', f'must be in [0, 1), got {m.dropout}')
  _require(m.num_classes >= 0, 'model.num_classes', f'must be >= 0, got {m.num_classes}')
  _require(df.num_steps >= 2, 'diffusion.num_steps', f'must be >= 2, got {df.num_steps}')
  _require(0 < df.beta_min <= df.beta_max < 1, 'diffusion.beta_min',
           f'need 0 < beta_min <= beta_max < 1, got {df.beta_min}, {df.beta_max}')
  _require(df.sampler in ('ddim', 'ddpm'), 'diffusion.sampler', f"must be 'ddim' or 'ddpm', got {df.sampler!r}")
  _require(df.sample_steps <= df.num_steps, 'diffusion.sample_steps',
           f'must be <= diffusion.num_steps ({df.num_steps}), got {df.sample_steps}')
  _require(df.eta >= 0, 'diffusion.eta', f'must be >= 0, got {df.eta}')
  _require(o.name in OPTIMIZERS, 'optimizer.name', f'must be one of {OPTIMIZERS}, got {o.name!r}')
  _require(o.learning_rate > 0, 'optimizer.learning_rate', f'must be positive, got {o.learning_rate}')
  _require(0 <= o.momentum < 1, 'optimizer.momentum', f'must be in [0, 1), got {o.momentum}')
  _require(o.grad_clip >= 0, 'optimizer.grad_clip', f'must be >= 0, got {o.grad_clip}')
  _require(0 <= o.ema_decay < 1, 'optimizer.ema_decay', f'must be in [0, 1), got {o.ema_decay}')
  _require(t.num_milestones >= 0, 'train.num_milestones', f'must be >= 0, got {t.num_milestones}')
  mesh_data = config.mesh.data
  _require(mesh_data == -1 or mesh_data > 0, 'mesh.data', f'must be -1 (all devices) or positive, got {mesh_data}')
  if num_devices is not None:
    n_data = num_devices if mesh_data == -1 else mesh_data
    _require(n_data <= num_devices, 'mesh.data', f'asks for {n_data} devices but only {num_devices} exist')
    batch = effective_batch_size(config)
    _require(batch % n_data == 0, 'train.batch_size',
             f'the effective batch min(data.n={d.n}, train.batch_size={t.batch_size}) = {batch} is not '
             f'divisible by the {n_data} data-parallel devices (mesh.data)')


def effective_batch_size(config: ml_collections.ConfigDict) -> int:
  return min(config.data.n, config.train.batch_size)
