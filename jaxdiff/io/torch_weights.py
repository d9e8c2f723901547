"""Torch weight files read without torch, and their tensors put into Flax NNX networks by name.

The reader takes what `torch.save(model.state_dict(), path)` writes, in torch's zip format and in the older
"legacy" format, with `zipfile` and a restricted `pickle.Unpickler` that refuses every global except the few a
state dict uses (a file cannot run code when read). A NumPy `.npz` of the same names is read too (`np.savez`
is the torch-free way to write one).

The name mapping needs no table when the Flax attributes are named after torch's: the module path joined by
dots (list items by their index) plus the torch name of the variable: `kernel` -> `weight` (OIHW for a
convolution, [out, in] for a dense layer, against Flax's HWIO and [in, out]), BatchNorm `scale` -> `weight`,
`bias` -> `bias`, `mean` -> `running_mean`, `var` -> `running_var`. The FID Inception-v3
(jaxdiff.metrics.inception) and SSCD's ResNet-50 (jaxdiff.metrics.sscd) load their weights this way.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import jax.numpy as jnp
import numpy as np
from flax import nnx

ModuleT = TypeVar('ModuleT', bound=nnx.Module)

# --------------------------------------------------------------------------------------------------
# Reading torch files without torch.

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16, 'CharStorage': np.int8,
    'ByteStorage': np.uint8, 'BoolStorage': np.bool_, 'UntypedStorage': np.uint8,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


def _bfloat16():
  import ml_dtypes  # a jax dependency
  return ml_dtypes.bfloat16


class _StorageType:
  def __init__(self, name: str):
    self.name = name

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(_bfloat16() if self.name == 'BFloat16Storage' else _STORAGE_DTYPES[self.name])


class _StorageRef:
  """A storage named in the pickle; its bytes are read after unpickling (they follow it in legacy files)."""

  def __init__(self, key: str, dtype: np.dtype, numel: int, view_offset: int = 0):
    self.key, self.dtype, self.numel, self.view_offset = key, dtype, numel, view_offset


class _LazyTensor:
  def __init__(self, storage: _StorageRef, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

  def materialize(self, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    flat = storages[self.storage.key][self.storage.view_offset:]
    need = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride)) + 1
    if 0 not in self.size and need > flat.size:
      raise ValueError(f'torch file is corrupt: a tensor of shape {self.size} reads past its storage '
                       f'{self.storage.key!r} ({flat.size} elements)')
    if 0 in self.size:
      return np.zeros(self.size, flat.dtype)
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                           strides=[s * item for s in self.stride])
    return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict into lazy tensors; refuses every global except the few a state dict uses."""

  _ALLOWED = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
      ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
  }

  def __init__(self, file, *, legacy: bool):
    super().__init__(file)
    self.legacy = legacy

  def find_class(self, module: str, name: str):
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module == 'torch' and (name in _STORAGE_DTYPES or name == 'BFloat16Storage'):
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f'refusing to unpickle {module}.{name}: only tensors in (ordered) dicts are read from torch files')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id in torch file: {pid!r}')
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'unsupported storage type in torch file: {storage_type!r}')
    view_offset = 0
    if self.legacy and len(pid) > 5 and pid[5] is not None:
      view_offset = int(pid[5][1])  # (view_key, offset, size): a view into a shared storage
    return _StorageRef(key, storage_type.dtype, numel, view_offset)


def _collect(obj, found: list):
  if isinstance(obj, _LazyTensor):
    found.append(obj)
  elif isinstance(obj, Mapping):
    for v in obj.values():
      _collect(v, found)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      _collect(v, found)


def _as_state_dict(obj, storages: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a state dict (a mapping of names to tensors), '
                     f'got {type(obj).__name__}')
  out = {}
  for name, value in obj.items():
    if not isinstance(value, _LazyTensor):
      raise ValueError(f'{path}: entry {name!r} is a {type(value).__name__}, not a tensor; '
                       'expected a flat state dict')
    out[str(name)] = value.materialize(storages)
  return out


def _read_zip(path: str) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pkl) != 1:
      raise ValueError(f'{path}: not a torch zip file (found {len(pkl)} data.pkl records)')
    prefix = pkl[0][:-len('data.pkl')]
    order = '<'
    if prefix + 'byteorder' in names and zf.read(prefix + 'byteorder').strip() == b'big':
      order = '>'
    obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), legacy=False).load()
    tensors: list[_LazyTensor] = []
    _collect(obj, tensors)
    storages = {}
    for t in tensors:
      ref = t.storage
      if ref.key not in storages:
        record = f'{prefix}data/{ref.key}'
        if record not in names:
          raise ValueError(f'{path}: torch zip file lacks storage record {record!r}')
        storages[ref.key] = np.frombuffer(zf.read(record), dtype=ref.dtype.newbyteorder(order))
  return _as_state_dict(obj, storages, path)


def _read_legacy(path: str) -> dict[str, np.ndarray]:
  with open(path, 'rb') as f:
    try:
      magic = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not this format"
      raise ValueError(f'{path}: neither a torch zip file nor a legacy torch file ({e})') from e
    if magic != _LEGACY_MAGIC:
      raise ValueError(f'{path}: not a torch file (bad magic number {magic!r})')
    protocol = pickle.load(f)
    if protocol != _LEGACY_PROTOCOL:
      raise ValueError(f'{path}: unsupported legacy torch protocol version {protocol!r}')
    sys_info = pickle.load(f)
    order = '<' if sys_info.get('little_endian', True) else '>'
    obj = _RestrictedUnpickler(f, legacy=True).load()
    keys = pickle.load(f)
    tensors: list[_LazyTensor] = []
    _collect(obj, tensors)
    dtypes = {t.storage.key: t.storage.dtype for t in tensors}
    storages = {}
    for key in keys:
      key = str(key)
      (numel,) = struct.unpack(order + 'q', f.read(8))
      dtype = np.dtype(dtypes.get(key, np.uint8)).newbyteorder(order)
      data = f.read(numel * dtype.itemsize)
      if len(data) != numel * dtype.itemsize:
        raise ValueError(f'{path}: truncated legacy torch file (storage {key!r})')
      storages[key] = np.frombuffer(data, dtype=dtype)
  return _as_state_dict(obj, storages, path)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torch `state_dict` file (torch.save, zip or legacy format) -> {name: numpy array}, without torch.

  Only plain tensors in a (ordered) dict are accepted: the unpickler refuses any other global, so a
  file cannot run code when read.
  """
  if zipfile.is_zipfile(path):
    return _read_zip(path)
  return _read_legacy(path)



def read_state_dict(path: str, *, network: str = 'network') -> dict[str, np.ndarray]:
  """A state dict from a torch file (.pth/.pt, zip or legacy) or a NumPy .npz of the same names.

  Raises FileNotFoundError naming `network` and the path when there is no file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{network} weight file not found: {path}')
  if path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  return read_torch_state_dict(path)


# --------------------------------------------------------------------------------------------------
# Torch names of a Flax network's variables, and loading a state dict into it.

# Flax variable name -> torch's (a convolution's or dense layer's kernel is transposed, see `torch_shape`).
_TORCH_VARIABLE = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                   'var': 'running_var'}


def flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
  """Nested mapping -> {path tuple: leaf}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping[tuple, Any]) -> dict:
  """{path tuple: leaf} -> nested dicts (the inverse of `flatten`)."""
  out: dict = {}
  for path, v in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return out


def to_torch_layout(value: np.ndarray) -> np.ndarray:
  """A Flax kernel in torch's layout: HWIO -> OIHW (convolution), [in, out] -> [out, in] (dense)."""
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T


def from_torch_layout(value: np.ndarray) -> np.ndarray:
  """A torch weight in Flax's kernel layout: OIHW -> HWIO, [out, in] -> [in, out]."""
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T


def torch_tensor_map(model: nnx.Module) -> dict[str, tuple[tuple, tuple[int, ...]]]:
  """torch state-dict name -> (Flax state path, torch shape) of every variable of `model`."""
  out = {}
  for path, leaf in flatten(nnx.to_pure_dict(nnx.state(model))).items():
    if path[-1] not in _TORCH_VARIABLE:
      raise AssertionError(f'no torch name for Flax variable {"/".join(map(str, path))}')
    shape = tuple(leaf.shape)
    if path[-1] == 'kernel':
      shape = to_torch_layout(np.empty(shape, np.uint8)).shape
    out['.'.join(map(str, path[:-1] + (_TORCH_VARIABLE[path[-1]],)))] = (path, shape)
  return out


def batch_norm_counters(names: Iterable[str]) -> dict[str, tuple[int, ...]]:
  """The `num_batches_tracked` step counter [] torch keeps beside each BatchNorm's `running_mean`."""
  return {n[:-len('running_mean')] + 'num_batches_tracked': () for n in names if n.endswith('.running_mean')}


def describe(names: list[str], limit: int = 8) -> str:
  """The first `limit` names, then a count of the rest."""
  shown = ', '.join(names[:limit])
  return shown + (f' (and {len(names) - limit} more)' if len(names) > limit else '')


def check_state_dict(state_dict: Mapping[str, Any], needed: Mapping[str, tuple[tuple, tuple[int, ...]]],
                     optional: Mapping[str, tuple[int, ...]], *, source: str, network: str) -> None:
  """Raises ValueError unless `state_dict` holds every `needed` tensor with its torch shape (floating point)
  and nothing but `optional` tensors (shapes checked) besides. The message names the offending tensors (the
  first 8 of each kind, then a count), `source` and `network`."""
  problems = []
  missing = sorted(n for n in needed if n not in state_dict)
  if missing:
    problems.append(f'missing tensor(s): {describe(missing)}')
  unexpected = sorted(n for n in state_dict if n not in needed and n not in optional)
  if unexpected:
    problems.append(f'unexpected tensor(s): {describe(unexpected)}')
  misshaped = []
  for name, value in state_dict.items():
    want = needed[name][1] if name in needed else optional.get(name)
    if want is not None and tuple(np.shape(value)) != tuple(want):
      misshaped.append(f'{name} has shape {tuple(np.shape(value))}, expected {tuple(want)}')
    elif name in needed and not np.issubdtype(np.asarray(value).dtype, np.floating):
      misshaped.append(f'{name} has dtype {np.asarray(value).dtype}, expected a floating-point tensor')
  if misshaped:
    problems.append('wrong tensor(s): ' + describe(misshaped))
  if problems:
    raise ValueError(f'{source} does not match {network}: ' + '; '.join(problems))


def placeholder_init(value: float) -> Callable:
  """A Flax initializer filling with `value` in NumPy: placeholders of a network whose weights come from a
  file (a jnp fill would compile once per distinct shape, seconds for a large network)."""
  return lambda key, shape, dtype=np.float32: np.full(shape, value, dtype)


def load_state_dict(model: ModuleT, state_dict: Mapping[str, Any], *,
                    optional: Mapping[str, tuple[int, ...]] | None = None, source: str = 'state dict',
                    network: str = 'the network') -> ModuleT:
  """`model` holding exactly the tensors of a torch state dict named after its attributes (float32).

  Every variable must be present with its torch shape; anything else is refused except the `optional`
  tensors (default: BatchNorm step counters), see `check_state_dict`.
  """
  needed = torch_tensor_map(model)
  if optional is None:
    optional = batch_norm_counters(needed)
  check_state_dict(state_dict, needed, optional, source=source, network=network)
  flat = {}
  for name, (path, _) in needed.items():
    value = np.asarray(state_dict[name], dtype=np.float32)
    flat[path] = jnp.asarray(from_torch_layout(value) if path[-1] == 'kernel' else value)
  graphdef, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, unflatten(flat))
  return nnx.merge(graphdef, state)


def to_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
  """The torch state dict of `model`'s variables (what `load_state_dict` reads back, without step counters);
  `np.savez(path, **to_state_dict(model))` writes a weight file without torch."""
  flat = flatten(nnx.to_pure_dict(nnx.state(model)))
  out = {}
  for name, (path, _) in torch_tensor_map(model).items():
    value = np.asarray(flat[path])
    out[name] = to_torch_layout(value) if path[-1] == 'kernel' else value
  return out
