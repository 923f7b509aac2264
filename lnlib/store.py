"""The one way lnlib writes files: to a temporary file beside the target, moved into place when complete, so a
reader never sees a half-written file and an interrupted save leaves the old file as it was.

Every result lnlib saves (counts, identifications, aligned weights, checkpoints, cache entries) is a safetensors
file whose header holds one JSON record: its kind and format version (`FORMATS`), the caller's fields, and a
SHA-256 digest of the tensors and the record, so a file edited by hand or damaged on disk is refused with its
path named. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

FORMATS: dict[str, int] = {"counts": 2, "identification": 2, "aligned": 2, "shard": 1}
"""Kinds of lnlib file and their current format version; a version changes whenever the layout does."""

KEY = "lnlib"


class StoreError(ValueError):
    """A file is missing, damaged, of another kind or format, or was changed after it was written."""


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on success it is moved onto `path` in one step, on error it
    is removed and `path` is untouched. Refuses an existing `path` unless overwrite=True, and a folder always."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file path such as {path / 'result.safetensors'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise OSError(f"cannot write into {path.parent} ({exc.strerror or exc}); choose a writable folder "
                      "(for lnlib's cache: set LNLIB_CACHE_DIR)") from exc
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path` for a folder that must appear complete or not at all (e.g. a converted model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield work
        os.replace(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write a text file atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _digest(tensors: Mapping[str, torch.Tensor], record: dict) -> str:
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save(path: str | os.PathLike, kind: str, tensors: Mapping[str, torch.Tensor], record: dict,
         overwrite: bool = False) -> Path:
    """Write `tensors` and the JSON-serialisable `record` as an lnlib file of `kind` (see `FORMATS`)."""
    from safetensors.torch import save_file

    if kind not in FORMATS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(FORMATS)}")
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {"kind": kind, "version": FORMATS[kind], **record}
    try:
        header["sha256"] = _digest(tensors, header)
    except (TypeError, ValueError) as exc:  # json refuses the value; nothing has been written
        raise ValueError(f"cannot save {path}: its record (e.g. the provenance) must hold JSON values only "
                         f"(texts, numbers, lists, dicts), but {exc}; convert tensors with .tolist() or "
                         ".item()") from exc
    with atomic_path(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={KEY: json.dumps(header)})
    return Path(path)


def load(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an lnlib file of `kind`: (tensors, record). Raises `StoreError`, naming the file, when it is missing,
    unreadable (truncated or not safetensors), of another kind or version, or changed since it was written."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise StoreError(f"{path} is damaged or not a safetensors file ({exc}); delete it and write it again") from exc
    try:
        header = json.loads(meta[KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is not an lnlib file (its header has no '{KEY}' record)") from exc
    if header.get("kind") != kind:
        raise StoreError(f"{path} holds lnlib {header.get('kind')!r} data, not {kind!r}")
    if header.get("version") != FORMATS[kind]:
        raise StoreError(f"{path} has {kind} format version {header.get('version')}; this lnlib reads version "
                         f"{FORMATS[kind]}: write it again with this lnlib")
    expected = header.pop("sha256", None)
    if expected != _digest(tensors, header):
        raise StoreError(f"{path} was changed after lnlib wrote it (its content no longer matches the digest in its "
                         "header); write it again rather than editing it")
    return tensors, header
