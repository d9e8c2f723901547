"""Paper 3 (Marion & Wu; SPEC section 5): class-conditional rectified-flow U-Nets on the first N CIFAR-10 images,
swept over N, the batch B, the learning rate and the width; curves collapse against the normalized step
T = tau (2048/N)(B/16)(lr/1e-5) in N and B (not in lr).

    python -m jaxdiff.main --config=configs/cifar10_flow.py --workdir=workdirs/cifar_flow          # default run
    python -m jaxdiff.sweep --config=configs/cifar10_flow.py:n --sweep_dir=workdirs/cifar_flow_n    # N sweep
    python -m jaxdiff.sweep --config=configs/cifar10_flow.py:cpu --sweep_dir=workdirs/flow_cpu     # 2-core CPU
    python -m jaxdiff.analysis --workdirs workdirs/flow_cpu --out workdirs/flow_cpu/analysis

Default = paper 3's run: N = 2048 (5,120 test images), the U-Net of width 128 (92,670,610 parameters: label
and time embedded in 512 dimensions, multipliers (1, 2, 4), 3 residual blocks per level, attention heads of
64 channels at 16x16 and 8x8; jaxdiff/models/unet.py), B = 16, Adam lr 1e-4, EMA 0.9999 (evaluated),
conditional and unguided (guidance 0), t uniform, Euler with 250 steps, 300k steps (the memorization score is
~0.95 there in paper 3). Each of 40 log-spaced milestones evaluates 2,000 samples: f_mem (ratio test), the
loss at a fixed time on one batch of 16 training images and on the test set, FD / KID / SW in Inception
features against the test set and against the training set (`eval.quality_references`; pass the pytorch-fid
weights with --config.eval.inception_weights=PATH), and the copy score (`copy_score`: the fraction of samples
with cosine similarity above 0.6 to a training image) in pixel space, or in paper 3's SSCD features with
--config.eval.copy_features=sscd --config.eval.copy_weights=sscd_disc_mixup.torchvision.pt. Not from the paper (unverified there): pixels scaled to [0, 2] and
centred (about [-1, 1]), dropout 0.1, GroupNorm groups 16 (any value gives the same counts). GPU/TPU work,
not measured here; needs CIFAR-10 prepared for TFDS (README, "Data").

Sweep arguments (`python -m jaxdiff.sweep`; each point is one run in its own workdir, analysed together):
`n` (N in 2048, 4096, 8192, 16384), `batch` (B in 16, 32, 64, 128), `lr` (1e-5, 5e-5, 1e-4, 4e-4), `width`
(16, 32, 64, 128, 192); comma-separated arguments sweep their product (`n,batch`).

`cpu`: the same family on the embedded digits at 8x8 (grayscale), a U-Net of width 8 with paper 3's
conditioning (labels, emb 32, scale-shift, ResNet-block resampling), Adam 2e-3, no EMA, Euler 20 steps, 128
samples per milestone in pixel features; every point is an ensemble over N in CPU_N, and the points sweep B
in CPU_B: tau_mem ~ N / B then collapses against the normalized step. Measured cost: bench/README.md
("Paper 3 on the CPU").
"""

from jaxdiff.config import config_args, default_config
from jaxdiff.sweep import product

PAPER_N = (2048, 4096, 8192, 16384)
PAPER_B = (16, 32, 64, 128)
PAPER_LR = (1e-5, 5e-5, 1e-4, 4e-4)
PAPER_WIDTHS = (16, 32, 64, 128, 192)
CPU_N = (8, 16, 32)
CPU_B = (2, 4, 8)
SWEEPS = {'n': ('data.n', PAPER_N), 'batch': ('train.batch_size', PAPER_B),
          'lr': ('optimizer.learning_rate', PAPER_LR), 'width': ('model.width', PAPER_WIDTHS)}


def _args(arg: str) -> set[str]:
  return config_args(arg, set(SWEEPS) | {'cpu'}, 'configs/cifar10_flow.py')


def get_config(arg: str = ''):
  args = _args(arg)
  c = default_config()
  c.family = 'flow'
  c.data.name = 'cifar10'
  c.data.n, c.data.n_test = 2048, 5120
  c.data.image_size, c.data.grayscale = 32, False
  c.data.scale = 2.0
  m = c.model
  m.width, m.channel_mult, m.num_res_blocks, m.attention_resolutions = 128, (1, 2, 4), 3, (16, 8)
  m.num_classes, m.emb_dim, m.scale_shift, m.resample, m.head_dim = 10, 512, True, 'resblock', 64
  m.norm_bias, m.attention_gate, m.learned_null = False, True, False
  m.groups, m.dropout = 16, 0.1
  c.flow.sample_steps, c.flow.guidance, c.flow.t_distribution = 250, 0.0, 'uniform'
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.ema_decay = 'adam', 1e-4, 0.9999
  c.train.batch_size, c.train.num_steps, c.train.num_milestones = 16, 300_000, 40
  c.train.steps_per_dispatch, c.train.log_every, c.train.checkpoint_every = 100, 1000, 20_000
  c.eval.num_samples, c.eval.sample_batch_size, c.eval.features = 2000, 500, 'inception'
  c.eval.quality_references = ('test', 'train')
  c.eval.loss_train_examples = 16   # paper 3: the training loss on one batch (0: on all N)
  # Paper 3's memorization score: the copy score in SSCD features. Pixel cosine here, so the config runs without
  # weights; --config.eval.copy_features=sscd --config.eval.copy_weights=sscd_disc_mixup.torchvision.pt for SSCD.
  c.eval.metrics = ('memorization', 'losses', 'quality', 'copy_score')
  c.eval.copy_features = 'pixels'
  if 'cpu' in args:
    c.eval.metrics = ('memorization', 'losses', 'quality')
    c.data.name, c.data.image_size, c.data.grayscale, c.data.n_test = 'digits', 8, True, 256
    c.data.scale = 1.0
    m.width, m.channel_mult, m.num_res_blocks, m.attention_resolutions = 8, (1, 2), 1, ()
    m.emb_dim, m.head_dim, m.groups, m.dropout, m.kernels = 32, 0, 8, 0.0, 'auto'
    c.ensemble.n = CPU_N
    c.flow.sample_steps = 20
    c.optimizer.learning_rate, c.optimizer.ema_decay = 2e-3, 0.0
    c.train.batch_size = 4
    c.train.num_steps = 6000
    c.train.num_milestones = 20
    c.train.steps_per_dispatch = 250
    c.train.log_every = 500
    c.train.checkpoint_every = 2000
    c.eval.num_samples = c.eval.sample_batch_size = 128
    c.eval.grid_samples, c.eval.features, c.eval.bootstrap_resamples = 32, 'pixels', 500
    c.eval.loss_batch_size, c.eval.loss_noise_draws, c.eval.loss_train_examples = 256, 8, 0
    # tau_mem from the loss gap where it passes 0.2 in absolute terms: on the steep part of the gap curve, above
    # its early noise (~0.05 at N = 8), which a relative 10% threshold (~0.05 here) sits in.
    c.eval.loss_gap_relative, c.eval.loss_gap_threshold = False, 0.2
  return c


def sweep(arg: str = ''):
  """One point per value of each swept variable named in `arg` (their product); `cpu`: one point per B."""
  args = _args(arg)
  if 'cpu' in args:
    return product({'train.batch_size': list(CPU_B)})
  axes = {SWEEPS[a][0]: list(SWEEPS[a][1]) for a in sorted(args & set(SWEEPS))}
  return product(axes) if axes else [{}]
