"""Files: atomic writes (the one home of "write to a temporary file, then move it into place") and the check
that expected input files exist.

A job that is killed mid-write must never leave a half-written file that Snakemake (or a resumed run) takes for
a finished one. Every writer here opens a uniquely named temporary file (``.<name>.<pid>.<random>.tmp``, with
the permissions of a plainly written file) in the destination's directory, writes, flushes and fsyncs it,
and moves it over the destination with :func:`os.replace` (atomic on POSIX within one file system); on any
error the temporary file is removed and the destination is left as it was (an ``OSError``, e.g. no space left or
a parent path that is a file, is re-raised with the same errno and a message naming the destination). Parent
directories are created.

* :func:`atomic_open`: the context manager the others are built on (binary or text mode);
* :func:`atomic_write_text`: a string;
* :func:`write_json`: JSON (indent 1, sorted keys; numpy scalars and tensors become numbers and lists);
* :func:`save_torch`: ``torch.save`` of any object (checkpoints, priors, resumable training states).

Before data or released files are read, :func:`require_files` raises one ``FileNotFoundError`` that lists every
expected path (found or missing) and says where to get them.

``torch`` is imported only by :func:`save_torch` (:func:`write_json` recognises tensors without importing it),
so the result and audit code can use this module without paying for it.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_text", "write_csv", "write_json", "save_torch", "require_files"]


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it replaces ``path`` atomically.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8). If the block raises, the temporary
    file is deleted and ``path`` is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never another writer's file; 0o666 minus the umask: the permissions of a plainly written file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _write_error(path, exc, f"expected {str(path.parent)!r} to be a writable directory") from exc
    try:
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, exc, "expected a writable directory with free space") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_error(path: Path, exc: OSError, expected: str) -> OSError:
    """``exc`` again (same errno, so the same ``OSError`` subclass), its message naming ``path``."""
    text = (f"could not write {str(path)!r}: {exc.strerror or exc}; {expected} (any previous {path.name} is "
            "unchanged)")
    return OSError(exc.errno, text) if exc.errno is not None else OSError(text)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def write_csv(path: str | os.PathLike, frame: Any) -> Path:
    """Write a pandas DataFrame to ``path`` as CSV without its index, atomically; return the path."""
    with atomic_open(path, "w") as f:
        frame.to_csv(f, index=False)
    return Path(path)


def _json_default(o: Any) -> Any:
    np = sys.modules.get("numpy")
    if np is not None and isinstance(o, np.integer):
        return int(o)
    if np is not None and isinstance(o, np.floating):
        return float(o)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON (indent 1, sorted keys) atomically; return the path.

    numpy integers and floats become JSON numbers and tensors nested lists; anything else that JSON cannot hold
    raises ``TypeError`` naming its type (and nothing is written).
    """
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; return the path."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def require_files(
    paths: Sequence[tuple[str, bool]], what: str, root: str | os.PathLike, source: str, hint: str = ""
) -> None:
    """Raise ``FileNotFoundError`` listing every expected ``(path, present)`` if any is missing.

    The message reads ``"<what>: <k> of <n> expected path(s) missing under root <root>:"``, one ``found`` /
    ``MISSING`` line per path, then ``"To obtain them: <source>.<hint>"``.
    """
    missing = [p for p, ok in paths if not ok]
    if not missing:
        return
    lines = "\n".join(f"  {'found  ' if ok else 'MISSING'} {p}" for p, ok in paths)
    raise FileNotFoundError(
        f"{what}: {len(missing)} of {len(paths)} expected path(s) missing under root "
        f"{str(root)!r}:\n{lines}\nTo obtain them: {source}.{hint}"
    )
