"""Loads the compiled op libraries, or explains why it cannot.

``_C`` holds the op schemas and the CPU kernels; ``_C_cuda`` the CUDA kernels,
present when the package was built with its CUDA backend (``_build_info``) and
loaded only when the running torch has CUDA. The libraries must have been built
against the running torch: a mismatch is reported with both versions. When they
cannot be loaded the package falls back to the pure-PyTorch implementations in
:mod:`spinerank_ext.reference` with a warning (for CUDA tensors only, when only
the CUDA library is missing), unless ``SPINERANK_EXT_REQUIRE_COMPILED=1`` is set,
in which case it raises.
"""
from __future__ import annotations

import glob
import os
import pathlib
import warnings

import torch

__all__ = ["LOADED", "LOAD_ERROR", "CUDA_LOADED", "CUDA_LOAD_ERROR", "has_compiled_ops",
           "has_cuda_ops", "require_compiled"]


class CompiledOpsUnavailable(ImportError):
    pass


def require_compiled() -> bool:
    """True when SPINERANK_EXT_REQUIRE_COMPILED forbids the reference fallback."""
    return os.environ.get("SPINERANK_EXT_REQUIRE_COMPILED", "") not in ("", "0")


def _find_library(stem: str = "_C"):
    import spinerank_ext

    # Editable installs put the library in site-packages while the package's
    # __file__ points at the source tree: search every folder of __path__.
    for folder in spinerank_ext.__path__:
        for name in sorted(glob.glob(os.path.join(folder, stem + ".*so"))):
            return name, folder
    return None, None


def _installed_elsewhere():
    """The folder of an installed spinerank_ext that holds the compiled library,
    when the package imported is another one (the source tree, shadowing it)."""
    import spinerank_ext

    try:
        from importlib import metadata

        installed = pathlib.Path(str(metadata.distribution("spinerank_ext").locate_file("spinerank_ext")))
    except Exception:  # not installed, or metadata unreadable
        return None
    here = {pathlib.Path(p).resolve() for p in spinerank_ext.__path__}
    if installed.resolve() in here or not glob.glob(str(installed / "_C.*so")):
        return None
    return installed


def _load():
    path, folder = _find_library()
    if path is None:
        import spinerank_ext

        elsewhere = _installed_elsewhere()
        if elsewhere is not None:
            raise CompiledOpsUnavailable(
                f"this is the source tree {spinerank_ext.__path__[0]}, which has no compiled library: the current "
                f"directory comes first on sys.path and hides the installed package in {elsewhere}. Run from "
                "another directory, or, to develop in the source tree, install it editable: "
                "`pip install --no-build-isolation -e .`"
            )
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


def _load_cuda():
    """Loads _C_cuda; returns why not when it is not loaded."""
    if torch.version.cuda is None:
        return "the running torch has no CUDA"
    try:
        from . import _build_info
    except ImportError:
        _build_info = None
    if getattr(_build_info, "CUDA_BACKEND", "OFF") != "ON":
        return ("spinerank_ext was built without its CUDA backend; rebuild it where nvcc is "
                "found, e.g. `SPINERANK_CUDA=ON pip install --no-build-isolation .`")
    path, _ = _find_library("_C_cuda")
    if path is None:
        return "the compiled library spinerank_ext/_C_cuda.so was not found"
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError) as exc:
        return f"spinerank_ext/_C_cuda.so could not be loaded: {exc}"
    return None


LOAD_ERROR: str | None = None
CUDA_LOAD_ERROR: str | None = None
CUDA_LOADED = False
try:
    _load()
    LOADED = True
except (CompiledOpsUnavailable, OSError, RuntimeError) as exc:
    LOADED = False
    LOAD_ERROR = str(exc)
    if require_compiled():
        raise ImportError(f"spinerank_ext: {LOAD_ERROR}") from exc
    warnings.warn(
        f"spinerank_ext: {LOAD_ERROR}. Falling back to the pure-PyTorch reference "
        "implementations (correct but much slower; the random part of pair mining "
        "draws different pairs).",
        RuntimeWarning,
        stacklevel=2,
    )


if LOADED:
    CUDA_LOAD_ERROR = _load_cuda()
    CUDA_LOADED = CUDA_LOAD_ERROR is None


def has_compiled_ops() -> bool:
    """True when the fused C++ ops are loaded (False: the reference fallback runs)."""
    return LOADED


def has_cuda_ops() -> bool:
    """True when the fused CUDA kernels are loaded (False: CUDA tensors go to the
    reference implementations)."""
    return CUDA_LOADED


_warned_cuda = False


def fused_for(tensor: torch.Tensor) -> bool:
    """Whether the fused ops take ``tensor``'s device. False means: use the
    reference (after one warning), or raise if SPINERANK_EXT_REQUIRE_COMPILED."""
    global _warned_cuda
    if not LOADED:
        return False
    if tensor.device.type != "cuda" or CUDA_LOADED:
        return True
    if require_compiled():
        raise RuntimeError(f"spinerank_ext: no CUDA kernels for a CUDA tensor: {CUDA_LOAD_ERROR}")
    if not _warned_cuda:
        _warned_cuda = True
        warnings.warn(f"spinerank_ext: no CUDA kernels ({CUDA_LOAD_ERROR}). CUDA tensors use the "
                      "pure-PyTorch reference implementations.", RuntimeWarning, stacklevel=3)
    return False
