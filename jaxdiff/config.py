"""The configuration schema: every field jaxdiff reads, its default, and the checks on it.

Config files in `configs/` start from `default_config()` and override fields; `validate` rejects fields the
schema does not know, values of the wrong type and values out of range, naming the field.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxdiff import evaluators, experiments, timescales

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
      # Where paper 1's code differs from jaxdiff's defaults (configs/celeba_unet.py sets its choices; the
      # defaults are Flax's and those of earlier jaxdiff runs, kept so their results stay reproducible):
      init='flax',         # 'flax' (LeCun normal kernels, zero biases) or 'torch' (PyTorch's kaiming-uniform
                           # a = sqrt(5), biases +-1/sqrt(fan_in): paper 1; jaxdiff/models/initializers.py)
      time_activation='silu',  # of the time MLP: 'silu' or 'gelu' (paper 1)
      freq_shift=0,        # time embedding frequencies 10000^(-i / (W/2 - freq_shift)); paper 1: 1
      downsample_padding='same',  # stride-2 convolutions: 'same' (pads (0, 1)) or 'symmetric' ((1, 1), paper 1)
      norm_eps=1e-6,       # GroupNorm epsilon (Flax 1e-6; PyTorch and paper 1 1e-5)
      # Paper 3's ADM-style U-Net (jaxdiff/models/unet.py; configs/cifar10_flow.py sets them):
      emb_dim=0,           # time / label embedding width; 0: sinusoid of W, MLP to 4W (paper 1); paper 3: 512
      scale_shift=False,   # the embedding scales and shifts each block's second GroupNorm (paper 3) instead of adding
      resample='conv',     # 'conv' (stride-2 conv down, nearest x2 + conv up) or 'resblock' (ResNet blocks, paper 3)
      head_dim=0,          # > 0: attention heads = channels / head_dim (paper 3: 64) instead of num_heads
      norm_bias=True,      # GroupNorm bias (paper 3's counts: False; inferred, see unet.py)
      attention_gate=False,  # a learned scalar on each attention output (paper 3's counts: True; inferred)
      learned_null=True,   # the null class of guidance is a learned embedding row (False: a zero embedding)
  ))

  c.diffusion = ml_collections.ConfigDict(dict(
      num_steps=1000,
      beta_min=1e-4,
      beta_max=0.02,
      sampler='ddim',
      sample_steps=100,
      eta=0.0,
      # Clip the sampler's x0 estimates to the data range (Ho et al. 2020's sampler). On by default: it keeps
      # the trajectories of an imperfect network (a small or briefly trained one, as on a CPU) inside the range
      # it was trained on, where unclipped DDIM drifts to saturated images. Paper 1's DDIM never clips, and
      # clipping changes the samples of an imperfect network, so FID and tau_gen: its configs set False.
      clip_denoised=True,
      fixed_step=-1,       # >= 0: train at this one DDPM step only (paper 1's fixed-time mode); -1: steps
                           # uniform in 1..num_steps-1
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
      ema_debias=False,    # True: bias-corrected average (the initial weights' share removed, as in Adam)
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

  # Network families (jaxdiff/experiments/base.py): a vectorized ensemble, one member per (n, seed) for n in
  # `n` and seed in config.seed + [0, num_seeds), trained together by one compiled step. Each member trains
  # exactly as the solo run with data.n = n and that seed; data.n is then unused.
  c.ensemble = ml_collections.ConfigDict(dict(
      n=(),                    # training-set sizes of the members ('' / () = a single run of data.n)
      num_seeds=1,
      # Disjoint halves (paper 2, after Kadkhodaie et al. 2024): every (n, seed) becomes a pair of members
      # trained on disjoint training sets (data blocks 0 and 1; the Gaussian mixture: independent draws) from
      # independent seeds, sampled from the same noise at every milestone; rows get their agreement
      # (halves_*), the run halves.png and agreement.png. With n = () the pair is of data.n.
      halves=False,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      enabled=True,            # evaluate at every milestone (train.num_milestones of them, log-spaced)
      seed=-1,                 # the seed of the evaluation keys (samples, bootstrap); -1 = config.seed
      metrics=(),              # evaluators by name (jaxdiff/evaluators/); () = the family's default (U-Nets:
                               # memorization, losses, quality; the Gaussian mixture adds score_error, kl, sw)
      num_samples=1024,        # generated samples per evaluation (paper 1: 10,000)
      sample_batch_size=512,   # samples generated per compiled call (bounds memory)
      grid_samples=64,         # samples in samples.png / neighbours.png (the first ones)
      memorization_k=1 / 3,    # memorized: d1 / d2 < k
      memorization_fractions=(1 / 4, 1 / 3, 1 / 2),  # every row also has f_mem_k<k> at these k (paper 1)
      bootstrap_resamples=1000,
      nn_chunk_size=32768,     # training images per matrix product of the neighbour search
      loss_t_ou=0.01,          # OU time of loss_train_t / loss_test_t (step ~40 of 1000)
      loss_noise_draws=4,      # fixed noise draws averaged per image
      loss_batch_size=256,
      loss_train_examples=0,   # 'losses': the training loss on all n examples (0) or on the first k (paper 3:
                               # one batch of B = 16)
      features='random_projection',  # quality feature space: 'random_projection', 'pixels', 'inception', ''
      inception_weights='',    # path of pt_inception-2015-12-05-6726825d.pth ('' = cache / download)
      # 'copy_score' (paper 3): samples whose features have cosine similarity > copy_threshold to a training image's
      copy_features='sscd',    # 'sscd' (needs copy_weights), 'pixels' (pixel cosine, no weights), any extractor
      copy_weights='',         # path of sscd_disc_mixup.torchvision.pt (or an .npz of its state dict)
      copy_threshold=0.6,
      copy_input_size=0,       # SSCD's small edge after resizing (0 = 288, the SSCD README's)
      num_reference=0,         # test images per reference set for quality (0 = data.n_test // num_reference_sets)
      num_reference_sets=1,    # disjoint reference sets of the test images: fd/kid/sw are their mean, *_set_std
                               # the spread (paper 1: 10,000 samples against 5 disjoint sets of 10,000)
      kid_subset_size=1000,
      quality_references=('test',),  # 'quality' against 'test' (fd_<features>, ...) and/or 'train' (the
                               # training set: fd_train_<features>, ...; paper 3 reports both)
      tau_gen_rel_tol=0.1,     # tau_gen: first milestone within 10% of the best quality ...
      tau_gen_reference='best',  # ... of the best value ('best'), or of the drop from the first evaluation to
                               # the best ('drop': for quality metrics estimated from few samples)
      f_mem_threshold=0.0,     # tau_mem: first milestone where the lower bound of f_mem exceeds this
      loss_gap_threshold=0.1,  # ... and where (loss_test_t - loss_train_t) / loss_test_t exceeds this
      loss_gap_relative=True,  # False: the absolute gap loss_test_t - loss_train_t against the threshold
      lcs_threshold=0.5,       # 'substrings': lcs_frac = fraction of samples whose longest common substring
                               # with the training set is >= this fraction of the sequence length
  ))

  # The sections of the families that own one (e.g. c.gmm, c.rf): from the experiment table.
  for name, fields in experiments.sections().items():
    c[name] = fields

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


def config_args(arg: str, known: set[str], where: str) -> set[str]:
  """The comma-separated tokens of a config file's argument (`--config=FILE:cpu,long`); ValueError naming the
  file (`where`) and the unknown ones."""
  tokens = {t for t in (arg or '').split(',') if t}
  if tokens - known:
    raise ValueError(f'{where}: unknown argument(s) {sorted(tokens - known)}; known: {sorted(known)}')
  return tokens


def require(cond: bool, field: str, msg: str) -> None:
  if not cond:
    raise ValueError(f'config field {field!r}: {msg}')


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the first bad field. num_devices: devices available for the mesh."""
  _check_fields(config, default_config(), '')
  d, o, t = config.data, config.optimizer, config.train
  require(config.family in experiments.names(), 'family',
          f'must be one of {experiments.names()}, got {config.family!r}')
  experiment = experiments.get(config.family)
  for field, value in [('data.n', d.n), ('data.image_size', d.image_size), ('train.num_steps', t.num_steps),
                       ('train.batch_size', t.batch_size), ('train.steps_per_dispatch', t.steps_per_dispatch),
                       ('train.log_every', t.log_every), ('train.checkpoint_every', t.checkpoint_every),
                       ('eval.num_samples', config.eval.num_samples)]:
    require(value > 0, field, f'must be positive, got {value}')
  require(d.n_test >= 0, 'data.n_test', f'must be >= 0, got {d.n_test}')
  require(d.block >= 0, 'data.block', f'must be >= 0, got {d.block}')
  require(d.test_split in ('test', 'train'), 'data.test_split',
          f"must be 'test' or 'train', got {d.test_split!r}")
  require(d.centering in CENTERINGS, 'data.centering', f'must be one of {CENTERINGS}, got {d.centering!r}')
  require(d.scale > 0, 'data.scale', f'must be positive, got {d.scale}')
  require(o.name in OPTIMIZERS, 'optimizer.name', f'must be one of {OPTIMIZERS}, got {o.name!r}')
  require(o.learning_rate > 0, 'optimizer.learning_rate', f'must be positive, got {o.learning_rate}')
  require(0 <= o.momentum < 1, 'optimizer.momentum', f'must be in [0, 1), got {o.momentum}')
  require(o.grad_clip >= 0, 'optimizer.grad_clip', f'must be >= 0, got {o.grad_clip}')
  require(0 <= o.ema_decay < 1, 'optimizer.ema_decay', f'must be in [0, 1), got {o.ema_decay}')
  e = config.eval
  for field in ('num_samples', 'sample_batch_size', 'grid_samples', 'bootstrap_resamples', 'nn_chunk_size',
                'loss_noise_draws', 'loss_batch_size', 'kid_subset_size'):
    require(e[field] > 0, f'eval.{field}', f'must be positive, got {e[field]}')
  require(all(isinstance(x, str) for x in e.metrics) and len(set(e.metrics)) == len(e.metrics), 'eval.metrics',
          f'must be a tuple of distinct evaluator names, got {tuple(e.metrics)}')
  for name in e.metrics:
    require(name in evaluators.names(), 'eval.metrics',
            f'unknown evaluator {name!r}; known: {", ".join(evaluators.names())}')
  require(0 < e.memorization_k < 1, 'eval.memorization_k', f'must be in (0, 1), got {e.memorization_k}')
  require(all(isinstance(k, (int, float)) and 0 < k < 1 for k in e.memorization_fractions), 'eval.memorization_fractions',
          f'must be a tuple of thresholds in (0, 1), got {tuple(e.memorization_fractions)}')
  require(e.loss_train_examples >= 0, 'eval.loss_train_examples', f'must be >= 0, got {e.loss_train_examples}')
  require(e.loss_t_ou > 0, 'eval.loss_t_ou', f'must be positive, got {e.loss_t_ou}')
  require(e.features in ('', 'random_projection', 'pixels', 'inception'), 'eval.features',
          f"must be 'random_projection', 'pixels', 'inception' or '' (none), got {e.features!r}")
  if 'copy_score' in e.metrics:
    from jaxdiff.metrics import quality  # pylint: disable=g-import-not-at-top
    require(e.copy_features in quality.feature_extractor_names(), 'eval.copy_features',
            f'must be one of {quality.feature_extractor_names()}, got {e.copy_features!r}')
    require(e.copy_features != 'sscd' or bool(e.copy_weights), 'eval.copy_weights',
            "SSCD features need their weight file sscd_disc_mixup.torchvision.pt (or eval.copy_features='pixels')")
  require(-1 <= e.copy_threshold < 1, 'eval.copy_threshold', f'must be in [-1, 1), got {e.copy_threshold}')
  require(e.copy_input_size >= 0, 'eval.copy_input_size', f'must be >= 0, got {e.copy_input_size}')
  refs = tuple(e.quality_references)
  require(len(refs) >= 1 and len(set(refs)) == len(refs) and set(refs) <= {'test', 'train'},
          'eval.quality_references', f"must be distinct names among 'test', 'train', got {refs}")
  require(e.num_reference >= 0, 'eval.num_reference', f'must be >= 0, got {e.num_reference}')
  require(e.num_reference_sets >= 1, 'eval.num_reference_sets', f'must be >= 1, got {e.num_reference_sets}')
  require(0 < e.tau_gen_rel_tol, 'eval.tau_gen_rel_tol', f'must be positive, got {e.tau_gen_rel_tol}')
  require(e.tau_gen_reference in timescales.QUALITY_REFERENCES, 'eval.tau_gen_reference',
          f'must be one of {timescales.QUALITY_REFERENCES}, got {e.tau_gen_reference!r}')
  require(0 <= e.f_mem_threshold < 1, 'eval.f_mem_threshold', f'must be in [0, 1), got {e.f_mem_threshold}')
  require(0 < e.lcs_threshold <= 1, 'eval.lcs_threshold', f'must be in (0, 1], got {e.lcs_threshold}')
  require(t.loop in ('auto', 'device', 'host'), 'train.loop',
          f"must be 'auto', 'device' or 'host', got {t.loop!r}")
  require(t.num_milestones >= 0, 'train.num_milestones', f'must be >= 0, got {t.num_milestones}')
  ens = config.ensemble
  if ens.n:
    require(getattr(experiment, 'ensemble_section', False), 'ensemble.n',
            f'family {config.family!r} does not train ensembles of ensemble.n'
            + (f' (its members are set in its section {experiment.section!r})' if experiment.section else ''))
    require(all(isinstance(x, int) and x > 0 for x in ens.n), 'ensemble.n',
            f'must be a tuple of positive ints, got {ens.n}')
    require(len(set(ens.n)) == len(ens.n), 'ensemble.n', f'has repeated sizes: {ens.n}')
  require(ens.num_seeds >= 1, 'ensemble.num_seeds', f'must be >= 1, got {ens.num_seeds}')
  if ens.halves:
    require(getattr(experiment, 'halves', False), 'ensemble.halves',
            f'family {config.family!r} does not train disjoint-halves pairs')
    require(config.data.block == 0, 'ensemble.halves',
            f'the halves are data blocks 0 and 1; data.block must be 0, got {config.data.block}')
  require(isinstance(e.seed, int) and e.seed >= -1, 'eval.seed', f'must be an int >= -1, got {e.seed!r}')
  experiment.validate(config)
  mesh_data = config.mesh.data
  require(mesh_data == -1 or mesh_data > 0, 'mesh.data', f'must be -1 (all devices) or positive, got {mesh_data}')
  if num_devices is not None:
    n_data = num_devices if mesh_data == -1 else mesh_data
    require(n_data <= num_devices, 'mesh.data', f'asks for {n_data} devices but only {num_devices} exist')
    batch = effective_batch_size(config)
    require(batch % n_data == 0, 'train.batch_size',
            f'the effective batch min(data.n={d.n}, train.batch_size={t.batch_size}) = {batch} is not '
            f'divisible by the {n_data} data-parallel devices (mesh.data)')


def effective_batch_size(config: ml_collections.ConfigDict) -> int:
  return min(config.data.n, config.train.batch_size)
