"""Loads the compiled op library, or explains why it cannot.

The library must have been built against the running torch: a mismatch is reported
with both versions. When it cannot be loaded the package falls back to the
pure-PyTorch implementations in :mod:`spinerank_ext.reference` with a warning,
unless ``SPINERANK_EXT_REQUIRE_COMPILED=1`` is set, in which case it raises.
"""
from __future__ import annotations

import glob
import os
import warnings

import torch

__all__ = ["LOADED", "LOAD_ERROR", "has_compiled_ops"]


class CompiledOpsUnavailable(ImportError):
    pass


def _find_library():
    import spinerank_ext

    # Editable installs put the library in site-packages while the package's
    # __file__ points at the source tree: search every folder of __path__.
    for folder in spinerank_ext.__path__:
        for name in sorted(glob.glob(os.path.join(folder, "_C*.so"))):
            return name, folder
    return None, None


def _load():
    path, folder = _find_library()
    if path is None:
        raise CompiledOpsUnavailable(
            "the compiled library spinerank_ext/_C.so was not found; "
            "build it with `pip install .` from the repository root"
        )
    try:
        from . import _build_info
    except ImportError:  # a build folder of an older layout
        _build_info = None
    built = getattr(_build_info, "TORCH_VERSION", "unknown")
    running = torch.__version__.split("+", 1)[0]
    if built != running:
        raise CompiledOpsUnavailable(
            f"spinerank_ext was built against torch {built} but torch {torch.__version__} "
            "is running; rebuild it for this torch with "
            "`pip install --no-build-isolation --force-reinstall .`"
        )
    torch.ops.load_library(path)


LOAD_ERROR: str | None = None
try:
    _load()
    LOADED = True
except (CompiledOpsUnavailable, OSError, RuntimeError) as exc:
    LOADED = False
    LOAD_ERROR = str(exc)
    if os.environ.get("SPINERANK_EXT_REQUIRE_COMPILED", "") not in ("", "0"):
        raise ImportError(f"spinerank_ext: {LOAD_ERROR}") from exc
    warnings.warn(
        f"spinerank_ext: {LOAD_ERROR}. Falling back to the pure-PyTorch reference "
        "implementations (correct but much slower; the random part of pair mining "
        "draws different pairs).",
        RuntimeWarning,
        stacklevel=2,
    )


def has_compiled_ops() -> bool:
    """True when the fused C++ ops are loaded (False: the reference fallback runs)."""
    return LOADED
