"""Integrity of what the pipeline writes: tensor checksums in prior and checkpoint files, input checksums in
result records, and the check that records computed from different inputs are never mixed.

* :func:`tensor_checksum`: sha256 over every leaf of a saved object except its ``"metadata"`` entry, in a
  canonical order (mapping keys sorted, sequences in order): for a tensor its path, dtype, shape and raw bytes,
  for any other leaf its path and ``repr``. The same tensors give the same checksum whatever the dict order.
* :func:`stamp` adds it to the object's metadata (key :data:`CHECKSUM_KEY`, written as ``"sha256:<hex>"``);
  :func:`verify` recomputes it after loading and raises :class:`IntegrityError` naming the file, the expected
  and the found checksum. A file whose metadata has no checksum (written before this module existed) loads
  with a :class:`MissingChecksumWarning`, not an error: such files are still valid results of earlier runs,
  and their records stay comparable through the bytes' checksum (:func:`file_checksum`). Files with no
  metadata at all (torchvision's or a converted SimCLR checkpoint, external inputs) load silently.
* :func:`load_torch_file`: ``torch.load`` whose failure (a truncated or corrupted zip) is re-raised as an
  :class:`IntegrityError` naming the file and what was expected, then :func:`verify`.
* :func:`input_checksums`: the checksums of a result's inputs (config slice, prior, checkpoint, tuning file)
  for its record (``record["inputs"]``); :func:`check_consistent_inputs` refuses records of one setting whose
  inputs disagree, naming the records and the input.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHECKSUM_KEY", "IntegrityError", "MissingChecksumWarning", "tensor_checksum", "stamp", "verify",
           "load_torch_file", "file_checksum", "config_checksum", "input_checksums", "check_consistent_inputs"]

#: the metadata key that holds a file's tensor checksum
CHECKSUM_KEY = "tensor_sha256"


class IntegrityError(ValueError):
    """A file is unreadable or its tensors do not match the checksum stored with them."""


class MissingChecksumWarning(UserWarning):
    """A pipeline file carries no tensor checksum (written by an earlier version): loaded unchecked."""


# ---------------------------------------------------------------------------------------------- checksums
def _feed(h, path: str, value: Any) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{path}|tensor|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, Mapping):
        h.update(f"{path}|mapping|{len(value)}|".encode())
        for key in sorted(value, key=str):
            _feed(h, f"{path}/{key}", value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{path}|sequence|{len(value)}|".encode())
        for i, v in enumerate(value):
            _feed(h, f"{path}[{i}]", v)
    else:
        h.update(f"{path}|{type(value).__name__}|{value!r}|".encode())


def tensor_checksum(obj: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` over every entry of ``obj`` but ``"metadata"`` (see the module docstring)."""
    h = hashlib.sha256()
    for key in sorted(obj, key=str):
        if key != "metadata":
            _feed(h, str(key), obj[key])
    return f"sha256:{h.hexdigest()}"


def stamp(obj: Mapping[str, Any]) -> dict:
    """A copy of ``obj`` whose ``metadata`` (a copy, created if absent) holds the tensor checksum."""
    out = dict(obj)
    out["metadata"] = dict(out.get("metadata") or {}) | {CHECKSUM_KEY: tensor_checksum(obj)}
    return out


def verify(obj: Any, path: str | os.PathLike, what: str = "file") -> str | None:
    """Check the loaded ``obj`` of ``path`` against its stored checksum; return the checksum (None if none).

    Raises :class:`IntegrityError` naming the file when they differ; warns (:class:`MissingChecksumWarning`)
    when the metadata has no checksum; files without metadata are external and pass unchecked.
    """
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    expected = meta.get(CHECKSUM_KEY)
    if expected is None:
        warnings.warn(f"{what} {str(path)!r} carries no tensor checksum ({CHECKSUM_KEY}; written by an earlier "
                      "version): loaded without an integrity check", MissingChecksumWarning, stacklevel=3)
        return None
    found = tensor_checksum(obj)
    if found != expected:
        raise IntegrityError(f"{what} {str(path)!r} is corrupted: its tensors have checksum {found}, but the file "
                             f"records {expected} (expected them to match). Delete the file and rerun the "
                             "workflow to recreate it.")
    _CACHE[_stat_key(path)] = found
    return found


def load_torch_file(path: str | os.PathLike, what: str = "file", map_location: Any = "cpu",
                    weights_only: bool = True) -> Any:
    """``torch.load`` of ``path`` (an error naming the file if it is unreadable), then :func:`verify`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - a damaged zip or pickle fails in many ways
        raise IntegrityError(f"could not read {what} {str(path)!r} ({path.stat().st_size} bytes): expected a "
                             f"complete torch.save file; it is truncated or corrupted ({type(exc).__name__}: "
                             f"{exc}). Delete it and rerun the workflow to recreate it.") from exc
    verify(obj, path, what)
    return obj


# ---------------------------------------------------------------------------------------------- inputs of a result
_CACHE: dict[tuple, str] = {}


def _stat_key(path: str | os.PathLike) -> tuple:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return (str(p.resolve()),)
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # a rewrite changes these


def file_checksum(path: str | os.PathLike) -> str:
    """The checksum of an input file: its verified tensor checksum for a stamped torch file (cached from the
    stage's own load), else ``"file-sha256:<hex>"`` of its bytes."""
    key = _stat_key(path)
    if key in _CACHE:
        return _CACHE[key]
    if Path(path).suffix in (".pt", ".pth"):
        obj = load_torch_file(path, "input file")
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        if isinstance(meta, Mapping) and meta.get(CHECKSUM_KEY):
            return _CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    _CACHE[key] = f"file-sha256:{h.hexdigest()}"
    return _CACHE[key]


def config_checksum(config: Any) -> str:
    """``"sha256:<hex>"`` of a config slice as canonical JSON (keys sorted)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def input_checksums(config: Any = None, **files: str | os.PathLike | None) -> dict[str, str | None]:
    """``{"config": ..., <name>: ...}``: the config slice's checksum and each named input file's
    (:func:`file_checksum`; None for an input the result did not use)."""
    out: dict[str, str | None] = {"config": config_checksum(config)}
    for name, path in files.items():
        out[name] = file_checksum(path) if path else None
    return out


def check_consistent_inputs(records: Iterable[tuple[str, Mapping]], key: Sequence[str],
                            inputs: Sequence[str] = ("checkpoint", "prior")) -> None:
    """Refuse records of one setting (equal ``key`` fields) computed from different inputs.

    ``records`` are ``(path, record)`` pairs; each record's ``"inputs"`` (from :func:`input_checksums`) is
    compared per name in ``inputs`` across the records sharing ``key``; records without ``"inputs"`` (older
    runs) and inputs a record did not use (None) are skipped. Raises :class:`IntegrityError` naming the
    setting, the input, the two checksums and one record of each.
    """
    seen: dict[tuple, dict[str, tuple[str, str]]] = {}
    for path, rec in records:
        given = rec.get("inputs")
        if not isinstance(given, Mapping):
            continue
        setting = tuple(rec.get(k) for k in key)
        first = seen.setdefault(setting, {})
        for name in inputs:
            value = given.get(name)
            if value is None:
                continue
            if name not in first:
                first[name] = (value, str(path))
            elif first[name][0] != value:
                where = ", ".join(f"{k}={v}" for k, v in zip(key, setting))
                raise IntegrityError(
                    f"results of one setting ({where}) were computed from different {name} files: "
                    f"{first[name][1]} used {first[name][0]} but {path} used {value}; expected one {name} per "
                    "setting. A stale result is mixed in: delete the older runs (or rerun the workflow with "
                    "--forcerun on them) before aggregating.")
