"""Atomic file writes (and JSON-safe values for them): a checkpoint, a log or a volume is either the old file or
the new one, never a truncated mix, whatever kills the process (temp file in the
same folder, fsync, rename).

torch is imported only by the checkpoint functions: the synthetic-cohort workers
use the writers here without paying for it."""
from __future__ import annotations

import math
import os
import pathlib
import pickle
import tempfile
from typing import Any


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux:
    /proc/self/status); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | pathlib.Path, write, durable: bool = True) -> None:
    """Writes ``path`` through ``write(binary file)`` and a rename. ``durable``
    also fsyncs before the rename (for files that must survive a power cut)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; a file written in place would get 0666 less the umask.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(value):
    """NaN and infinities (a metric of a task without labels) -> None, in nested
    dicts and lists, so the JSON written stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_text(path: str | pathlib.Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: str | pathlib.Path, state: dict[str, Any]) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | pathlib.Path, map_location="cpu") -> dict[str, Any]:
    """A checkpoint's content, loaded with ``weights_only=True``: tensors and plain
    Python data only. A checkpoint is a pickle, and unpickling an arbitrary object
    can run code; such a file is refused before any of it runs."""
    import torch

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object, or the pickle is damaged
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "Unsupported" in line or "global" in line.lower()),
                      first[-1].strip() if first else "")
        raise ValueError(f"checkpoint {path} was refused: it holds more than tensors and plain data "
                         f"(loading it could run code), or it is damaged ({detail})") from exc
    except Exception as exc:  # a foreign or damaged file
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} is not a spinerank checkpoint (it holds a {type(state).__name__})")
    return state
