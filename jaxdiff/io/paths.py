"""Files on local disks or object stores (`gs://` on Cloud TPU VMs), through `etils.epath`.

A multi-host job's processes must share one workdir (Orbax writes every host's part of a checkpoint there),
so a workdir may be `gs://bucket/run`. Every file a run writes goes through these helpers (by way of
`jaxdiff.io.rundir.RunDir`). Object stores have no append and no rename, so a file is always written whole
(locally through a temporary file and an atomic rename, so a reader never sees half a file).
"""

from __future__ import annotations

import os

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
  return '://' not in os.fspath(path)


def path(p: str | os.PathLike) -> epath.Path:
  """An epath.Path; local paths are made absolute (Orbax and the figures need no working-directory games)."""
  return epath.Path(os.path.abspath(p) if is_local(p) else os.fspath(p))


def makedirs(p: str | os.PathLike) -> epath.Path:
  out = path(p)
  out.mkdir(parents=True, exist_ok=True)
  return out


def write_text(p: str | os.PathLike, text: str) -> None:
  """Write a whole file so that readers see the old or the new content, never a part."""
  _write(p, text.encode())


def write_bytes(p: str | os.PathLike, data: bytes) -> None:
  _write(p, data)


def _write(p, data: bytes) -> None:
  target = path(p)
  if not is_local(p):
    target.write_bytes(data)   # an object store replaces an object in one request
    return
  tmp = target.with_name(target.name + '.tmp')
  tmp.write_bytes(data)
  os.replace(tmp, target)


def read_text(p: str | os.PathLike) -> str | None:
  """The file's text, or None if it does not exist."""
  target = path(p)
  return target.read_text() if target.exists() else None
