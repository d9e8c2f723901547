"""A small bidirectional transformer over token sequences: the denoiser of the masked-diffusion family.

  embed:   token embedding (V + 1 symbols: the V tokens and MASK) + learned position embedding   [B, S, W]
  blocks:  `depth` pre-LayerNorm blocks: x + MHA(LN(x)) (no causal mask: every position sees every other;
           q, k, v without bias),
           then x + MLP(LN(x)) (W -> mlp_ratio W -> W, GELU)
  readout: LayerNorm, then a linear map W -> V: the logits of the clean token at every position [B, S, V]

No time input: the absorbing-state posterior p(x^i | z_t) does not depend on t given z_t (jaxdiff.diffusion.masked),
as MD4 allows. Parameters are plain nnx.Params (replicated like the U-Nets' under the shared driver's data
parallelism).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
  """x + MHA(LN(x)), then x + MLP(LN(x)). x: [B, S, W]."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads {num_heads}')
    self.num_heads = num_heads
    self.norm1 = nnx.LayerNorm(width, rngs=rngs)
    # No bias on q, k, v: a key bias cancels in the softmax (zero gradient, which Adam would turn into noise).
    self.qkv = nnx.Linear(width, 3 * width, use_bias=False, rngs=rngs)
    self.proj = nnx.Linear(width, width, rngs=rngs)
    self.norm2 = nnx.LayerNorm(width, rngs=rngs)
    self.fc1 = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, s, w = x.shape
    h = self.num_heads
    q, k, v = jnp.split(self.qkv(self.norm1(x)).reshape(b, s, 3 * h, w // h), 3, axis=2)
    att = jax.nn.softmax(jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(w // h).astype(x.dtype), axis=-1)
    x = x + self.proj(jnp.einsum('bhqk,bkhd->bqhd', att, v).reshape(b, s, w))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class Transformer(nnx.Module):
  """Logits of the clean tokens. __call__(z int [B, S] in [0, V]) -> [B, S, V]."""

  def __init__(self, *, vocab_size: int, length: int, width: int, depth: int, num_heads: int,
               mlp_ratio: int = 4, rngs: nnx.Rngs):
    self.vocab_size, self.length = vocab_size, length
    self.embed = nnx.Embed(vocab_size + 1, width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (length, width), jnp.float32))
    self.blocks = nnx.List([Block(width, num_heads, mlp_ratio, rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.readout = nnx.Linear(width, vocab_size, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    if z.shape[-1] != self.length:
      raise ValueError(f'sequence length {z.shape[-1]} != the model length {self.length}')
    x = self.embed(z) + self.pos[...]
    for block in self.blocks:
      x = block(x)
    return self.readout(self.norm(x))


def parameter_count(*, vocab_size: int, length: int, width: int, depth: int, num_heads: int,
                    mlp_ratio: int = 4) -> int:
  """Parameters of `Transformer(...)`, from shapes alone (nothing allocated)."""
  model = nnx.eval_shape(lambda: Transformer(vocab_size=vocab_size, length=length, width=width, depth=depth,
                                             num_heads=num_heads, mlp_ratio=mlp_ratio, rngs=nnx.Rngs(0)))
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


__all__ = ['Block', 'Transformer', 'parameter_count']
