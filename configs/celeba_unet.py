"""Paper 1, figures 2-3: the DDPM U-Net on grayscale 32x32 CelebA (SPEC section 1), exactly.

    python -m jaxdiff.main --config=configs/celeba_unet.py --workdir=workdirs/celeba_n1024 \
        --config.data.n=1024 --config.model.width=32

W = 32 (4.06M parameters as paper 1 counts them), SGD lr 0.01 momentum 0.95, batch min(n, 512), T = 1000,
no EMA, 40 log-spaced milestones.

What matches the authors' code (github.com/tbonnair/Why-Diffusion-Models-Don-t-Memorize, Experiments/src):
the network function (U-Net layer for layer, GELU time MLP `model.time_activation`, embedding frequencies over
W/2 - 1 `model.freq_shift=1`, stride-2 convolutions padded (1, 1) `model.downsample_padding='symmetric'`,
GroupNorm epsilon 1e-5 `model.norm_eps`; checked against a PyTorch reference by tests/test_torch_unet.py),
PyTorch's initialization (`model.init='torch'`), the linear DDPM schedule with training steps uniform in
1..999, epsilon-MSE, SGD with momentum 0.95 and no weight decay, batch min(n, 512), deterministic DDIM with 100
steps and no clipping of x0 (`diffusion.clip_denoised=False`), the grayscale 32x32 centre-cropped images minus
their mean pixel. `--config.diffusion.fixed_step=K` trains at the one step K (the authors' fixed-time mode).
What differs: the random numbers (epoch permutations, noise, dropout masks and initial weights come from JAX's
generator: the same distributions, other draws); the 100 DDIM steps are rounded from an even grid over 999..0
(the authors truncate) and the last one goes to the x0 estimate (theirs stops at step 0, ~0.01 noise); the
evaluation draws eval.num_samples samples (paper 1:
10,000; `:fid` sets that). Paper 1 trains 1-11 million steps; memorization at n = 1024 appears around
1.6M steps. Cost: GPU/TPU work, not yet run end to end; one step of this U-Net at batch 64 takes 9.6 ms on an
H200 and 4.37 s on a 2-core CPU (bench/README.md), and this config's batch is min(n, 512). Needs CelebA
prepared for TFDS in array_record format (see README, "Data").

`:fid` evaluates as paper 1 reports sample quality: FID with the pytorch-fid Inception network (weights from
--config.eval.inception_weights=PATH or the cache), 10,000 samples against 5 disjoint sets of 10,000 test
images (fd_inception is their mean, fd_inception_set_std the spread), the test images held out from the end of
CelebA's train split (its test split has 19,962); training uses the first n <= 112,770 images.
Sampling 10,000 images with 100 DDIM steps at every milestone is GPU/TPU work (18.7 s on an H200 at W = 32).
"""

from jaxdiff.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.data.name = 'celeb_a'
  c.data.n = 1024
  c.data.n_test = 2048
  c.data.image_size = 32
  c.data.grayscale = True
  c.data.center_crop = True
  c.data.centering = 'pixel'
  c.model.width = 32
  c.model.channel_mult = (1, 2, 4)
  c.model.attention_resolutions = (16, 8)
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.95
  c.train.batch_size = 512
  c.train.num_steps = 2_000_000
  c.train.steps_per_dispatch = 100
  c.train.log_every = 1000
  c.train.checkpoint_every = 20_000
  c.train.num_milestones = 40
  c.model.init = 'torch'
  c.model.time_activation = 'gelu'
  c.model.freq_shift = 1
  c.model.downsample_padding = 'symmetric'
  c.model.norm_eps = 1e-5
  c.diffusion.sample_steps = 100
  c.diffusion.clip_denoised = False
  if arg == 'fid':
    c.data.test_split = 'train'
    c.data.n_test = 50_000
    c.eval.features = 'inception'
    c.eval.num_samples = 10_000
    c.eval.sample_batch_size = 1000
    c.eval.num_reference = 10_000
    c.eval.num_reference_sets = 5
  elif arg:
    raise ValueError(f"configs/celeba_unet.py: unknown argument {arg!r} (use '' or 'fid')")
  return c
