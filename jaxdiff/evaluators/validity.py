"""Evaluator 'validity': which levels of a known grammar the generated samples respect (paper 2).

`valid_<k>` for k = 1..L: the fraction of height-k subtrees of the samples that parse as valid
(`jaxdiff.data.rhm.validity`: mean over samples and positions; `valid_<L>` = fully grammatical sequences). For
families that declare their `grammar` (a `jaxdiff.data.rhm.Grammar`) and sample token sequences [N, s^L];
it declines for others. Computed in one jitted program on the samples as they are sharded over the mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff import distributed
from jaxdiff.data import rhm


class Evaluator:
  needs_samples = True

  def __new__(cls, ctx):
    if getattr(ctx.family, 'grammar', None) is None:
      return None
    return super().__new__(cls)

  def __init__(self, ctx):
    g = ctx.family.grammar
    self.tables = jnp.asarray(g.tables)
    self._validity = jax.jit(lambda tokens, tables: rhm.validity(tokens, tables, v=g.v, s=g.s))

  def __call__(self, params, keys, samples):
    del params, keys
    valid = distributed.fetch(self._validity(samples, self.tables))
    return {f'valid_{k + 1}': float(x) for k, x in enumerate(valid)}, {}
