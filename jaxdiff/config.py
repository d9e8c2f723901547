"""The configuration schema: every field jaxdiff reads, its default, and the checks on it.

Config files in `configs/` start from `default_config()` and override fields; `validate` rejects fields the
schema does not know, values of the wrong type and values out of range, naming the field.
"""

from __future__ import annotations

from typing import Any

import ml_collections

FAMILIES = ('ddpm', 'random_features', 'gmm')
MODELS = ('unet',)
OPTIMIZERS = ('sgd', 'adam')
CENTERINGS = ('pixel', 'image', 'none')
RF_ACTIVATIONS = ('tanh', 'relu', 'erf', 'sigmoid', 'linear')  # jaxdiff.models.random_features.ACTIVATIONS
RF_TRAINERS = ('exact', 'gd', 'adam')
RF_DATA = ('gaussian', 'images')
GMM_T_SAMPLING = ('log_uniform', 'uniform')
GMM_SPACINGS = ('log', 'linear')
GMM_QUALITY = ('kl', 'sw', 'score_err')


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.family = 'ddpm'

  c.data = ml_collections.ConfigDict(dict(
      name='digits',       # embedded MNIST digits (no download); or mnist, cifar10, celeb_a (TFDS)
      n=1024,              # training-set size
      block=0,             # training set = images[block * n:(block + 1) * n]
      n_test=2048,         # held-out test images
      test_split='test',   # TFDS: test images from split 'test', or 'train' (its last n_test images, disjoint
                           # from every training block; CelebA's test split holds 19,962, paper 1's FID 50,000)
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
      kernels='auto',      # 'xla' (Flax's attention, XLA's default options), 'cpu' (jaxdiff/models/kernels.py:
                           # per-example attention, Eigen convolutions; faster on XLA:CPU, same parameters),
                           # 'auto' (by JAX's default backend)
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
      steps_per_dispatch=32,   # train steps between host syncs (one compiled call when loop='device')
      loop='auto',             # 'device' (lax loop), 'host' (a dispatch per step); 'auto': 'device'
      log_every=100,
      checkpoint_every=5000,   # the latest checkpoint; milestone checkpoints are kept as well
      num_milestones=40,       # log-spaced milestones (checkpoints, evaluation)
      keep_milestone_checkpoints=True,
  ))

  # family 'ddpm': a vectorized ensemble of U-Nets, one member per (n, seed) for n in `n` and seed in
  # config.seed + [0, num_seeds), trained together by one compiled step (jaxdiff/unet_ensemble.py). Each
  # member trains exactly as the solo run with data.n = n and that seed; data.n is then unused.
  c.ensemble = ml_collections.ConfigDict(dict(
      n=(),                    # training-set sizes of the members ('' / () = a single run of data.n)
      num_seeds=1,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      enabled=True,            # evaluate at every milestone (train.num_milestones of them, log-spaced)
      num_samples=1024,        # generated samples per evaluation (paper 1: 10,000)
      sample_batch_size=512,   # samples generated per compiled call (bounds memory)
      grid_samples=64,         # samples in samples.png / neighbours.png (the first ones)
      memorization_k=1 / 3,    # memorized: d1 / d2 < k
      bootstrap_resamples=1000,
      nn_chunk_size=32768,     # training images per matrix product of the neighbour search
      loss_t_ou=0.01,          # OU time of loss_train_t / loss_test_t (step ~40 of 1000)
      loss_noise_draws=4,      # fixed noise draws averaged per image
      loss_batch_size=256,
      features='random_projection',  # quality feature space: 'random_projection', 'pixels', 'inception', ''
      inception_weights='',    # path of pt_inception-2015-12-05-6726825d.pth ('' = cache / download)
      num_reference=0,         # test images per reference set for quality (0 = data.n_test // num_reference_sets)
      num_reference_sets=1,    # disjoint reference sets of the test images: fd/kid/sw are their mean, *_set_std
                               # the spread (paper 1: 10,000 samples against 5 disjoint sets of 10,000)
      kid_subset_size=1000,
      tau_gen_rel_tol=0.1,     # tau_gen: first milestone within 10% of the best quality
      f_mem_threshold=0.0,     # tau_mem: first milestone where the lower bound of f_mem exceeds this
      loss_gap_threshold=0.1,  # ... and where (loss_test_t - loss_train_t) / loss_test_t exceeds this
      loss_gap_relative=True,  # False: the absolute gap loss_test_t - loss_train_t against the threshold
  ))

  # family 'random_features': the random-features score model of paper 1 (SPEC section 3,
  # jaxdiff/models/random_features.py, jaxdiff/random_features_run.py). Sizes are ratios to d.
  c.rf = ml_collections.ConfigDict(dict(
      d=100,                   # data dimension (images: taken from the data set)
      psi_p=(64.0,),           # p / d, one model size per value
      psi_n=(4.0, 8.0, 16.0, 32.0),  # n / d, nested training sets x[:n]
      t=(0.1,),                # OU diffusion times of the score being learned
      activation='tanh',
      data='gaussian',         # 'gaussian': N(0, Sigma); 'images': flattened config.data images
      sigma_x=1.0,             # Sigma = sigma_x^2 I ...
      spectrum=(),             # ... or a two-level spectrum (l1, l2) of variances
      spectrum_fraction=0.5,   # fraction of the d directions with variance l1
      num_seeds=1,             # independent (W, data, noise) draws, trained side by side (vmap)
      trainer='exact',         # 'exact' gradient flow, 'gd' or 'adam'
      learning_rate=0.0,       # gd / adam; 0 = auto (gd: half the stable step; adam: 1e-3)
      tau_min=0.1,             # evaluation times tau = steps * lr / d^2, log-spaced
      tau_max=1e6,
      num_times=200,
      num_noise_draws=0,       # xi draws per point for U, V; 0 = the exact E_xi (Hermite expansion)
      hermite_order=8,
      quadrature_nodes=32,
      chunk_size=256,          # training points per step of the scan that builds U
      num_test=2048,           # fresh test points for L_test and E_score
      tau_mem_threshold=0.0,   # L_gen level that defines tau_mem; 0 = tau_mem_fraction x final L_gen
      tau_mem_fraction=0.5,
      heatmap_times=(1e3, 1e4),  # training times of the L_gen heatmap over (psi_n, psi_p)
      theory_grid=1000,        # lambda points of the theoretical density (spectrum figure)
  ))

  # family 'gmm': the Gaussian-mixture experiment of paper 1's appendix (SPEC section 2; jaxdiff/gmm.py).
  # Data 1/2 N(mu, I) + 1/2 N(-mu, I), mu = mu_scale * ones(d), residual MLP score model; one member of a
  # vectorized ensemble (jaxdiff/ensemble.py) per (n, seed). Uses optimizer.*, train.num_steps/batch_size/
  # log_every/checkpoint_every/num_milestones/loop and eval.num_samples/memorization_k/bootstrap_resamples/
  # loss_t_ou/loss_noise_draws/tau_gen_rel_tol/f_mem_threshold/loss_gap_threshold.
  c.gmm = ml_collections.ConfigDict(dict(
      d=8,
      mu_scale=1.0,
      n=(128, 256, 512, 1024, 2048, 4096),  # training-set sizes (member n: the first n points of its seed)
      num_seeds=1,             # members per n; seed s of config.seed + s
      width=256,               # residual MLP width W
      num_blocks=3,
      conditional=False,       # class-conditional on the component, with classifier-free guidance
      label_dropout=0.1,       # conditional: probability of the null label in training
      guidance=0.0,            # conditional: w in eps = (1 + w) eps(x, y) - w eps(x, null)
      t_min=1e-3,              # OU diffusion times trained and sampled: [t_min, t_max]
      t_max=5.0,
      t_sampling='log_uniform',  # training times: 'log_uniform' or 'uniform' on [t_min, t_max]
      sample_steps=1000,       # Euler-Maruyama steps (eval.num_samples samples per milestone)
      sample_spacing='log',    # sampler time grid: 'log' (geometric) or 'linear'
      kl_samples=1000,         # probability-flow samples for KL(generated || true); 0 = no KL
      kl_steps=200,
      num_test=2048,           # fresh points for loss_test_t, score_err_t and the sliced Wasserstein
      quality='kl',            # tau_gen from 'kl', 'sw' or 'score_err' (population score-matching error)
      analysis=True,           # write <workdir>/analysis (jaxdiff.analysis tables and figures) at the end
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
  _require(d.test_split in ('test', 'train'), 'data.test_split',
           f"must be 'test' or 'train', got {d.test_split!r}")
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
  _require(m.kernels in ('auto', 'xla', 'cpu'), 'model.kernels',
           f"must be 'auto', 'xla' or 'cpu', got {m.kernels!r}")
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
  e = config.eval
  for field in ('num_samples', 'sample_batch_size', 'grid_samples', 'bootstrap_resamples', 'nn_chunk_size',
                'loss_noise_draws', 'loss_batch_size', 'kid_subset_size'):
    _require(e[field] > 0, f'eval.{field}', f'must be positive, got {e[field]}')
  _require(0 < e.memorization_k < 1, 'eval.memorization_k', f'must be in (0, 1), got {e.memorization_k}')
  _require(e.loss_t_ou > 0, 'eval.loss_t_ou', f'must be positive, got {e.loss_t_ou}')
  _require(e.features in ('', 'random_projection', 'pixels', 'inception'), 'eval.features',
           f"must be 'random_projection', 'pixels', 'inception' or '' (none), got {e.features!r}")
  _require(e.num_reference >= 0, 'eval.num_reference', f'must be >= 0, got {e.num_reference}')
  _require(e.num_reference_sets >= 1, 'eval.num_reference_sets', f'must be >= 1, got {e.num_reference_sets}')
  if config.family == 'ddpm' and e.enabled and e.features:
    sets, per_set = e.num_reference_sets, e.num_reference or d.n_test // e.num_reference_sets
    _require(sets * per_set <= d.n_test, 'eval.num_reference',
             f'{sets} disjoint reference set(s) of {per_set} test images need data.n_test >= {sets * per_set}, '
             f'got {d.n_test}')
    _require(sets == 1 or per_set >= 2, 'eval.num_reference_sets',
             f'{sets} disjoint reference sets of data.n_test = {d.n_test} images leave {per_set} image(s) per '
             'set (need >= 2)')
  _require(0 < e.tau_gen_rel_tol, 'eval.tau_gen_rel_tol', f'must be positive, got {e.tau_gen_rel_tol}')
  _require(0 <= e.f_mem_threshold < 1, 'eval.f_mem_threshold', f'must be in [0, 1), got {e.f_mem_threshold}')
  _require(t.loop in ('auto', 'device', 'host'), 'train.loop',
           f"must be 'auto', 'device' or 'host', got {t.loop!r}")
  _require(t.num_milestones >= 0, 'train.num_milestones', f'must be >= 0, got {t.num_milestones}')
  ens = config.ensemble
  if ens.n:
    _require(config.family == 'ddpm', 'ensemble.n',
             f"U-Net ensembles are for family 'ddpm' (got {config.family!r}; Gaussian-mixture members are "
             'gmm.n x gmm.num_seeds)')
    _require(all(isinstance(x, int) and x > 0 for x in ens.n), 'ensemble.n',
             f'must be a tuple of positive ints, got {ens.n}')
    _require(len(set(ens.n)) == len(ens.n), 'ensemble.n', f'has repeated sizes: {ens.n}')
  _require(ens.num_seeds >= 1, 'ensemble.num_seeds', f'must be >= 1, got {ens.num_seeds}')
  if config.family == 'random_features':
    _validate_rf(config.rf)
  if config.family == 'gmm':
    _validate_gmm(config.gmm)
  mesh_data = config.mesh.data
  _require(mesh_data == -1 or mesh_data > 0, 'mesh.data', f'must be -1 (all devices) or positive, got {mesh_data}')
  if num_devices is not None:
    n_data = num_devices if mesh_data == -1 else mesh_data
    _require(n_data <= num_devices, 'mesh.data', f'asks for {n_data} devices but only {num_devices} exist')
    batch = effective_batch_size(config)
    _require(batch % n_data == 0, 'train.batch_size',
             f'the effective batch min(data.n={d.n}, train.batch_size={t.batch_size}) = {batch} is not '
             f'divisible by the {n_data} data-parallel devices (mesh.data)')


def _validate_rf(r: ml_collections.ConfigDict) -> None:
  _require(r.d >= 1, 'rf.d', f'must be >= 1, got {r.d}')
  for field in ('psi_p', 'psi_n', 't', 'heatmap_times'):
    values = tuple(r[field])
    _require(len(values) >= 1 and all(isinstance(v, (int, float)) and v > 0 for v in values), f'rf.{field}',
             f'must be a non-empty tuple of positive numbers, got {values}')
  _require(r.activation in RF_ACTIVATIONS, 'rf.activation', f'must be one of {RF_ACTIVATIONS}, got {r.activation!r}')
  _require(r.data in RF_DATA, 'rf.data', f'must be one of {RF_DATA}, got {r.data!r}')
  _require(r.sigma_x > 0, 'rf.sigma_x', f'must be positive, got {r.sigma_x}')
  _require(len(r.spectrum) in (0, 2) and all(v > 0 for v in r.spectrum), 'rf.spectrum',
           f'must be () or two positive variances (l1, l2), got {tuple(r.spectrum)}')
  _require(0 < r.spectrum_fraction < 1, 'rf.spectrum_fraction', f'must be in (0, 1), got {r.spectrum_fraction}')
  _require(r.num_seeds >= 1, 'rf.num_seeds', f'must be >= 1, got {r.num_seeds}')
  _require(r.trainer in RF_TRAINERS, 'rf.trainer', f'must be one of {RF_TRAINERS}, got {r.trainer!r}')
  _require(r.learning_rate >= 0, 'rf.learning_rate', f'must be >= 0 (0 = auto), got {r.learning_rate}')
  _require(0 < r.tau_min < r.tau_max, 'rf.tau_min', f'need 0 < tau_min < tau_max, got {r.tau_min}, {r.tau_max}')
  _require(r.num_times >= 2, 'rf.num_times', f'must be >= 2, got {r.num_times}')
  _require(r.num_noise_draws >= 0, 'rf.num_noise_draws', f'must be >= 0 (0 = exact), got {r.num_noise_draws}')
  _require(r.hermite_order >= 1, 'rf.hermite_order', f'must be >= 1, got {r.hermite_order}')
  _require(r.quadrature_nodes >= 2, 'rf.quadrature_nodes', f'must be >= 2, got {r.quadrature_nodes}')
  _require(r.chunk_size >= 1, 'rf.chunk_size', f'must be >= 1, got {r.chunk_size}')
  _require(r.num_test >= 1, 'rf.num_test', f'must be >= 1, got {r.num_test}')
  _require(r.tau_mem_threshold >= 0, 'rf.tau_mem_threshold', f'must be >= 0, got {r.tau_mem_threshold}')
  _require(0 < r.tau_mem_fraction < 1, 'rf.tau_mem_fraction', f'must be in (0, 1), got {r.tau_mem_fraction}')
  _require(r.theory_grid >= 10, 'rf.theory_grid', f'must be >= 10, got {r.theory_grid}')
  for psi_p in r.psi_p:
    _require(round(psi_p * r.d) >= 1, 'rf.psi_p', f'psi_p * d = {psi_p} * {r.d} gives no features')
  for psi_n in r.psi_n:
    _require(round(psi_n * r.d) >= 1, 'rf.psi_n', f'psi_n * d = {psi_n} * {r.d} gives no training points')
  _require(len(set(r.psi_n)) == len(tuple(r.psi_n)), 'rf.psi_n', f'must not repeat values, got {tuple(r.psi_n)}')


def _validate_gmm(g: ml_collections.ConfigDict) -> None:
  for field in ('d', 'width', 'num_seeds', 'sample_steps', 'kl_steps', 'num_test'):
    _require(g[field] >= 1, f'gmm.{field}', f'must be >= 1, got {g[field]}')
  _require(g.num_blocks >= 0, 'gmm.num_blocks', f'must be >= 0, got {g.num_blocks}')
  _require(g.mu_scale > 0, 'gmm.mu_scale', f'must be positive, got {g.mu_scale}')
  ns = tuple(g.n)
  _require(len(ns) >= 1 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in ns),
           'gmm.n', f'must be a non-empty tuple of ints >= 2 (training-set sizes), got {ns}')
  _require(len(set(ns)) == len(ns), 'gmm.n', f'must not repeat values, got {ns}')
  _require(0 < g.t_min < g.t_max, 'gmm.t_min', f'need 0 < t_min < t_max, got {g.t_min}, {g.t_max}')
  _require(g.t_sampling in GMM_T_SAMPLING, 'gmm.t_sampling',
           f'must be one of {GMM_T_SAMPLING}, got {g.t_sampling!r}')
  _require(g.sample_spacing in GMM_SPACINGS, 'gmm.sample_spacing',
           f'must be one of {GMM_SPACINGS}, got {g.sample_spacing!r}')
  _require(g.kl_samples >= 0, 'gmm.kl_samples', f'must be >= 0 (0 = no KL), got {g.kl_samples}')
  _require(0 <= g.label_dropout < 1, 'gmm.label_dropout', f'must be in [0, 1), got {g.label_dropout}')
  _require(g.guidance >= 0, 'gmm.guidance', f'must be >= 0, got {g.guidance}')
  _require(g.quality in GMM_QUALITY, 'gmm.quality', f'must be one of {GMM_QUALITY}, got {g.quality!r}')
  _require(g.quality != 'kl' or g.kl_samples > 0, 'gmm.quality',
           "'kl' needs gmm.kl_samples > 0 (or choose 'sw' / 'score_err')")


def effective_batch_size(config: ml_collections.ConfigDict) -> int:
  return min(config.data.n, config.train.batch_size)
