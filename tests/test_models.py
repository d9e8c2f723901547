"""The U-Net: paper 1's parameter counts, shapes, dropout and class conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff.models import UNet, parameter_count, paper_parameter_count

PAPER_COUNTS = {8: 0.263e6, 16: 1.027e6, 32: 4.055e6, 48: 9.086e6, 64: 16.12e6}


@pytest.mark.parametrize('width', sorted(PAPER_COUNTS))
def test_parameter_counts_match_paper_1(width):
  model = nnx.eval_shape(lambda: UNet(image_size=32, channels=1, width=width, rngs=nnx.Rngs(0)))
  count = paper_parameter_count(model)
  assert abs(count / PAPER_COUNTS[width] - 1) < 0.02, (width, count)
  # The frozen sinusoidal table of the PyTorch code is the only difference from our trainable count.
  assert count - parameter_count(model) == 1000 * width


def _small(**kw):
  args = dict(image_size=8, channels=1, width=8, channel_mult=(1, 2), num_res_blocks=1,
              attention_resolutions=(4,), rngs=nnx.Rngs(0))
  args.update(kw)
  return UNet(**args)


def test_output_shape_matches_input_for_rgb_and_gray():
  for channels in (1, 3):
    model = _small(channels=channels)
    x = jnp.ones((2, 8, 8, channels))
    assert model(x, jnp.array([3.0, 70.0])).shape == x.shape


def test_time_changes_the_output_of_its_own_example():
  model = _small()
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 1))
  a, b = model(x, jnp.array([1.0])), model(x, jnp.array([500.0]))
  assert float(jnp.abs(a - b).max()) > 1e-4
  # Each example is conditioned on its own time: a batch of both gives each one's output.
  both = model(jnp.concatenate([x, x]), jnp.array([1.0, 500.0]))
  np.testing.assert_allclose(both, jnp.concatenate([a, b]), rtol=1e-5, atol=1e-5)


def test_dropout_is_random_in_training_and_off_in_evaluation():
  model = _small(dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  t = jnp.array([5.0, 50.0])
  e1, e2 = model(x, t), model(x, t, train=True)  # no key: deterministic
  np.testing.assert_array_equal(e1, e2)
  d1 = model(x, t, train=True, key=jax.random.PRNGKey(0))
  d2 = model(x, t, train=True, key=jax.random.PRNGKey(1))
  d1b = model(x, t, train=True, key=jax.random.PRNGKey(0))
  assert float(jnp.abs(d1 - d2).max()) > 1e-5
  np.testing.assert_array_equal(d1, d1b)


def test_class_conditioning_uses_the_label():
  model = _small(num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  t = jnp.array([5.0, 5.0])
  a = model(x, t, jnp.array([1, 1]))
  b = model(x, t, jnp.array([2, 2]))
  null = model(x, t, None)
  assert float(jnp.abs(a - b).max()) > 1e-5
  # Each example is conditioned on its own label.
  np.testing.assert_allclose(model(x, t, jnp.array([1, 2])), jnp.stack([a[0], b[1]]), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(null, model(x, t, jnp.array([10, 10])))


def test_cpu_kernels_compute_the_same_functions_and_gradients():
  """jaxdiff/models/kernels.py: the per-example attention gives Flax's values and gradients; the CPU compile
  options are given on the CPU (and only for 'cpu'/'auto') and compile a convolution's value and gradients to
  the default ones; a U-Net gives the same output with model.kernels 'cpu' and 'xla' from the same parameters."""
  from jaxdiff.models import kernels
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (3, 16, 2, 4)) for i in range(3))
  f_ex = lambda *a: jnp.sum(jnp.sin(kernels.per_example_attention(*a)))
  f_ref = lambda *a: jnp.sum(jnp.sin(nnx.dot_product_attention(*a)))
  np.testing.assert_allclose(kernels.per_example_attention(q, k, v), nnx.dot_product_attention(q, k, v), atol=1e-5)
  for a, b in zip(jax.grad(f_ex, (0, 1, 2))(q, k, v), jax.grad(f_ref, (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert kernels.attention_function('cpu') is kernels.per_example_attention
  assert kernels.attention_function('xla') is nnx.dot_product_attention

  if jax.default_backend() == 'cpu':
    assert kernels.resolve('auto') == 'cpu'
    assert kernels.compiler_options('cpu') == kernels.CPU_COMPILER_OPTIONS   # jaxlib 0.10 knows the option
    assert kernels.compiler_options('auto') == kernels.CPU_COMPILER_OPTIONS
  else:   # GPU/TPU (the device check runs this file there): XLA's defaults, Flax's attention for 'auto'
    assert kernels.resolve('auto') == 'xla'
    assert kernels.compiler_options('cpu') is None and kernels.compiler_options('auto') is None
  assert kernels.compiler_options('xla') is None
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 9, 8, 3))
  w = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 3, 5))
  conv = lambda x, w: jnp.sum(jnp.cos(jax.lax.conv_general_dilated(
      x, w, (2, 1), ((0, 2), (1, 0)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))))
  (va, ga), (vb, gb) = (jax.jit(jax.value_and_grad(conv, (0, 1)), compiler_options=o)(x, w)
                        for o in (kernels.compiler_options('cpu'), None))
  np.testing.assert_allclose(va, vb, rtol=1e-5)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  kw = dict(image_size=8, channels=1, width=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,))
  a, b = UNet(**kw, kernels='cpu', rngs=nnx.Rngs(0)), UNet(**kw, kernels='xla', rngs=nnx.Rngs(0))
  x, t = jax.random.normal(jax.random.PRNGKey(5), (2, 8, 8, 1)), jnp.array([3, 700])
  (ga, pa), (gb, pb) = nnx.split(a, nnx.Param), nnx.split(b, nnx.Param)
  apply = jax.jit(lambda params, gd: nnx.merge(gd, params)(x, t), static_argnums=1)
  np.testing.assert_allclose(apply(pa, ga), apply(pb, gb), atol=1e-5)
  grad = jax.jit(jax.grad(lambda params, gd: jnp.sum(jnp.sin(nnx.merge(gd, params)(x, t)))), static_argnums=1)
  for u, v in zip(jax.tree.leaves(grad(pa, ga)), jax.tree.leaves(grad(pb, gb))):
    np.testing.assert_allclose(u, v, atol=2e-5)
  with pytest.raises(ValueError, match="'model.kernels'"):
    UNet(**kw, kernels='flash', rngs=nnx.Rngs(0))


@pytest.mark.parametrize('strides,padding', [((1, 1), 'SAME'), ((2, 2), 'SAME'), ((2, 1), ((0, 2), (1, 0))),
                                             ((3, 2), ((2, 1), (0, 3))), ((1, 1), ((3, -1), (2, 2)))])
def test_canonical_conv_is_lax_conv_with_canonical_gradients(strides, padding):
  """kernels.canonical_conv: lax's convolution (value and both gradients, any strides and padding), with
  gradients that stay in XLA:CPU's canonical form inside a while loop's body, where XLA does not rewrite them
  (the kernel gradient JAX emits there runs as a naive loop nest, ~200x slower)."""
  from jaxdiff.models.kernels import canonical_conv
  dn = ('NHWC', 'HWIO', 'NHWC')
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 9, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
  loss = lambda conv: lambda x, w: jnp.sum(jnp.cos(conv(x, w, strides, padding, dimension_numbers=dn)))
  (va, ga), (vb, gb) = (jax.value_and_grad(loss(c), (0, 1))(x, w)
                        for c in (canonical_conv, jax.lax.conv_general_dilated))
  np.testing.assert_allclose(va, vb, rtol=1e-5)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def loop(conv):
    step = lambda _, xw: jax.tree.map(lambda p, g: p - 1e-3 * g, xw, jax.grad(loss(conv), (0, 1))(*xw))
    return jax.jit(lambda x, w: jax.lax.fori_loop(0, 2, step, (x, w)))

  def conv_labels(f):
    hlo = f.lower(x, w).compile().as_text()
    return {l.split('dim_labels=')[1].split(',')[0] for l in hlo.splitlines() if ' convolution(' in l}

  if jax.default_backend() == 'cpu':
    assert conv_labels(loop(canonical_conv)) == {'b01f_01io->b01f'}
    assert len(conv_labels(loop(jax.lax.conv_general_dilated))) > 1   # what the custom gradients avoid
  # Anything but a plain 2-D NHWC/HWIO convolution goes to lax unchanged.
  grouped = canonical_conv(x, w[:, :, :1, :3], (1, 1), 'SAME', dimension_numbers=dn, feature_group_count=3)
  np.testing.assert_allclose(grouped, jax.lax.conv_general_dilated(x, w[:, :, :1, :3], (1, 1), 'SAME',
                                                                   dimension_numbers=dn, feature_group_count=3))


def test_canonical_conv_maps_ensemble_members_instead_of_grouping():
  """Under `vmap` over both operands (an ensemble: each member its own input and kernel) canonical_conv runs the
  members' convolutions one by one, where lax's batching rule makes one grouped convolution (2-3x slower on
  XLA:CPU); values and gradients are lax's, also with one operand shared and under nested vmaps."""
  import re
  from jaxdiff.models.kernels import canonical_conv
  dn = ('NHWC', 'HWIO', 'NHWC')
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 8, 7, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 3, 4))

  def step(conv):
    loss = lambda x, w: jnp.sum(jnp.cos(conv(x, w, (2, 1), 'SAME', dimension_numbers=dn)))
    return jax.value_and_grad(loss, (0, 1))

  for axes in ((0, 0), (0, None), (None, 0)):
    args = (x if axes[0] == 0 else x[0], w if axes[1] == 0 else w[0])
    ours, ref = (jax.vmap(step(c), axes)(*args) for c in (canonical_conv, jax.lax.conv_general_dilated))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  nested = (jax.vmap(jax.vmap(step(c)))(x.reshape(3, 1, *x.shape[1:]), w.reshape(3, 1, *w.shape[1:]))
            for c in (canonical_conv, jax.lax.conv_general_dilated))
  for a, b in zip(*map(jax.tree.leaves, nested)):
    np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-4, atol=1e-4)

  def groups(conv):
    text = jax.jit(jax.vmap(step(conv))).lower(x, w).as_text()
    return {int(g) for g in re.findall(r'feature_group_count = (\d+)', text)}

  assert groups(canonical_conv) == {1}
  assert 3 in groups(jax.lax.conv_general_dilated)   # what the batching rule avoids


def test_canonical_conv_keeps_members_split_over_devices():
  """With several devices an ensemble's members may be split over them; canonical_conv then keeps lax's
  batching (members stay split, as lax's grouped convolution keeps them) instead of a loop that would gather
  every member onto every device. Values and gradients stay lax's."""
  from conftest import run_python
  code = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from jaxdiff.models.kernels import canonical_conv
mesh = jax.make_mesh((4,), ('data',), axis_types=(AxisType.Auto,))
split = NamedSharding(mesh, P('data'))
x = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (4, 2, 8, 8, 3)), split)
w = jax.device_put(jax.random.normal(jax.random.PRNGKey(1), (4, 3, 3, 3, 5)), split)
def grads(conv):
  loss = lambda x, w: jnp.sum(jnp.cos(conv(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))))
  return jax.jit(jax.vmap(jax.grad(loss, (0, 1))))(x, w)
ours, ref = grads(canonical_conv), grads(jax.lax.conv_general_dilated)
for a, b in zip(ours, ref):
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  assert a.sharding.spec[0] == 'data' and b.sharding.spec[0] == 'data', (a.sharding, b.sharding)
print('OK')
"""
  r = run_python(code, devices=4)
  assert r.returncode == 0 and r.stdout.strip().endswith('OK'), r.stderr[-3000:]


def test_torch_initialization_has_pytorchs_scales():
  """model.init='torch': every conv / dense kernel with >= 20,000 entries has PyTorch's std 1/sqrt(3 fan_in)
  (kaiming-uniform, a = sqrt(5)) within 2%, biases lie in +-1/sqrt(fan_in) and are not zero; the attention's
  input projections have PyTorch's Xavier std sqrt(2 / (C + 3C)) and zero biases."""
  from jaxdiff.models import unet
  model = UNet(image_size=8, channels=1, width=32, channel_mult=(2, 4), num_res_blocks=1, attention_resolutions=(4,),
               rngs=nnx.Rngs(0), init='torch')
  checked = 0
  for path, layer in nnx.iter_graph(model):
    if isinstance(layer, (nnx.Conv, nnx.Linear)):
      kernel, bias = np.asarray(layer.kernel.get_value()), np.asarray(layer.bias.get_value())
      fan_in = int(np.prod(kernel.shape[:-1]))
      assert np.abs(bias).max() <= 1 / np.sqrt(fan_in) + 1e-7 and np.abs(bias).max() > 0.5 / np.sqrt(fan_in), path
      if kernel.size >= 20_000:
        assert abs(np.std(kernel) * np.sqrt(3 * fan_in) - 1) < 0.02, path
        checked += 1
    if isinstance(layer, nnx.MultiHeadAttention) and layer.query.kernel.size >= 20_000:
      c = layer.query.kernel.shape[0]
      assert abs(np.std(np.asarray(layer.query.kernel.get_value())) * np.sqrt(4 * c / 2) - 1) < 0.02, path
      assert not np.any(np.asarray(layer.query.bias.get_value()))
      checked += 1
  assert checked >= 10
  assert unet.ACTIVATIONS['gelu'](jnp.array(1.0)) == pytest.approx(0.8413447, abs=1e-6)   # erf GELU, as torch's
