"""Evaluator 'substrings': how much of each generated sequence occurs verbatim in the training set, a graded
memorization measure beside the exact copies of 'copies' (for the same families: token sequences [N, S],
`vocab_size` declared).

Per sample, the longest common substring with any training sequence (`jaxdiff.metrics.sequences`), divided by
the sequence length S (1 = an exact copy, or a training sequence shifted into the sample's window):

- `lcs_mean`: its mean over the samples; `lcs_max`: its maximum;
- `lcs_frac`, `lcs_frac_lo`, `lcs_frac_hi`: the fraction of samples with LCS / S >= `eval.lcs_threshold` and
  its 95% bootstrap interval.

One jitted programme on the samples and the replicated training set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff import distributed
from jaxdiff.evaluators import copies
from jaxdiff.metrics import memorization
from jaxdiff.metrics.sequences import longest_common_substring


class Evaluator(copies.Evaluator):
  needs_samples = True

  def __init__(self, ctx):   # pylint: disable=super-init-not-called
    ec = ctx.config.eval
    self.train = copies.train_tokens(ctx)

    def metrics(samples, train, key):
      lcs = longest_common_substring(samples, train).astype(jnp.float32) / samples.shape[1]
      f, lo, hi = memorization.f_mem_bootstrap(lcs >= ec.lcs_threshold - 1e-6, key,
                                               num_resamples=ec.bootstrap_resamples)
      return {'lcs_mean': jnp.mean(lcs), 'lcs_max': jnp.max(lcs), 'lcs_frac': f, 'lcs_frac_lo': lo,
              'lcs_frac_hi': hi}
    self._metrics = jax.jit(metrics)

  def __call__(self, params, keys, samples):
    del params
    key = jax.random.fold_in(keys.memorization, 1)
    return {k: float(v) for k, v in distributed.fetch(self._metrics(samples, self.train, key)).items()}, {}
