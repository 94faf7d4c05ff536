"""Atomic file writes (and JSON-safe values for them): a checkpoint, a log or a volume is either the old file or
the new one, never a truncated mix, whatever kills the process (temp file in the
same folder, fsync, rename).

torch is imported only by the checkpoint functions: the synthetic-cohort workers
use the writers here without paying for it."""
from __future__ import annotations

import math
import os
import pathlib
import tempfile
from typing import Any


def atomic_write(path: str | pathlib.Path, write, durable: bool = True) -> None:
    """Writes ``path`` through ``write(binary file)`` and a rename. ``durable``
    also fsyncs before the rename (for files that must survive a power cut)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    import torch

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a foreign or damaged file
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from exc
