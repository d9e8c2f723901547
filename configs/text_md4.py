"""Masked diffusion language model (MD4; SPEC section 4, paper 2's text experiment): a time-free transformer
learns chunks of English text (CPython's pydoc_data.topics, text8-style, 27 symbols; no download) by masked
diffusion; copies of training chunks start at tau_mem growing with the training-set size P.

    python -m jaxdiff.main --config=configs/text_md4.py --workdir=workdirs/text_md4              # GPU-sized
    python -m jaxdiff.main --config=configs/text_md4.py:cpu --workdir=workdirs/text_md4_cpu      # 2-core CPU sweep
    python -m jaxdiff.main --config=configs/text_md4.py:cpu,rhm --workdir=workdirs/rhm_md4_cpu   # grammar data
    python -m jaxdiff.analysis --workdirs workdirs/text_md4_cpu --out workdirs/text_md4_cpu/analysis

Default (GPU-sized): chunks of d = 64 characters (5,835 distinct in the corpus), 512 test chunks, P in
{512, 1024, 2048, 4096} as one vectorized ensemble; the linear schedule; a transformer of width 256, depth 6,
8 heads (4.8M parameters); Adam lr 3e-4, batch 128, 200k steps, 30 log-spaced evaluations of 1024 samples
(64 unmasking steps): exact copies, the longest common substring with the training set (lcs_frac at LCS >= d/2),
the loss (bits per token) in 10 windows of t on train and test. Not run here (no accelerator in this session); see
bench/README.md, "Run costs of the shipped configs".

`cpu`: d = 16 characters, width 32, depth 2, 4 heads (27,579 parameters), Adam lr 2e-3, batch 16 (= the
smallest P), P in {16, 32, 64, 128} as one ensemble, 256 test chunks, 30k steps, 20 log-spaced evaluations of
256 samples (64 unmasking steps); tau_mem from the copies where their bootstrap lower bound leaves 0 (text has no
chance level of copies). Measured on the shared 2-core CPU: 8 min 21 s end to end; copies start at 672, 1990,
10136 steps for P = 16, 32, 64 (none for P = 128 by 30k): exponent 1.96 [1.57, 2.35]; from the loss gap 1.32
[0.97, 1.54] over the 4 P (bench/README.md, "Masked diffusion on text").

`rhm` (with or without `cpu`): the same family on paper 2's grammar (v = 8, n_c = 8, m = 3, s = 2, L = 3:
sequences of 8 tokens, P_max = 17,496), which adds valid@k and the chance copies P/P_max x valid@L.
"""

from jaxdiff.config import config_args, default_config

GPU_P = (512, 1024, 2048, 4096)
CPU_P = (16, 32, 64, 128)


def _args(arg: str) -> set[str]:
  return config_args(arg, {'cpu', 'rhm'}, 'configs/text_md4.py')


def get_config(arg: str = ''):
  args = _args(arg)
  c = default_config()
  c.family = 'md4'
  m = c.md4
  m.data = 'rhm' if 'rhm' in args else 'text'
  m.text.source, m.text.length, m.text.seed = 'pydoc', 64, 0
  m.schedule, m.eps = 'linear', 1e-4
  m.width, m.depth, m.num_heads, m.mlp_ratio = 256, 6, 8, 4
  m.sample_steps = 64
  m.loss_windows = 10
  c.ensemble.n = GPU_P
  c.data.n_test = 512
  c.optimizer.name, c.optimizer.learning_rate = 'adam', 3e-4
  c.train.batch_size = 128
  c.train.num_steps = 200_000
  c.train.num_milestones = 30
  c.train.log_every = 1000
  c.train.steps_per_dispatch = 1000
  c.train.checkpoint_every = 20_000
  c.eval.num_samples = 1024
  c.eval.sample_batch_size = 1024
  c.eval.loss_batch_size = 512
  c.eval.loss_noise_draws = 1
  c.eval.bootstrap_resamples = 1000
  c.eval.lcs_threshold = 0.5
  if 'cpu' in args:
    m.text.length = 16
    m.width, m.depth, m.num_heads = 32, 2, 4
    m.sample_steps = 64   # 4 d: fewer steps reveal several tokens at once, drawn independently (fewer copies)
    c.ensemble.n = CPU_P
    c.data.n_test = 256
    c.optimizer.learning_rate = 2e-3
    c.train.batch_size = 16   # = the smallest P: every member draws batches of the same size
    c.train.num_steps = 30_000
    c.train.num_milestones = 20
    c.train.steps_per_dispatch = 500
    c.train.log_every = 500
    c.train.checkpoint_every = 5000
    c.eval.num_samples = 256
    c.eval.sample_batch_size = 256
    c.eval.loss_batch_size = 256
  if 'rhm' in args:
    m.sample_steps = min(m.sample_steps, 32)
    c.data.n_test = 256
  return c
