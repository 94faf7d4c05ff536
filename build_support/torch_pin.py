"""scikit-build-core metadata provider: pin torch to the version we compile against.

A compiled torch extension only loads with the torch it was built for, so the wheel
must require exactly that torch. Which torch CMake finds is decided by
scikit-build-core: the target environment's site-packages come first on
CMAKE_PREFIX_PATH, the isolated build environment second. This module mirrors that:

* target environment has torch  -> build against it, require it, download nothing;
* target environment has none   -> add ``torch==FALLBACK_TORCH`` to the build
  requirements (the version this project is tested with) and require that.
"""
from __future__ import annotations

import sys
import sysconfig
from importlib import metadata

FALLBACK_TORCH = "2.13.0"


def _torch_version(paths):
    for dist in metadata.distributions(path=list(paths)):
        if (dist.metadata["Name"] or "").lower() == "torch":
            # Drop the local label (+cpu, +cu130): "torch==2.13.0" admits every build.
            return dist.version.split("+", 1)[0]
    return None


def _target_torch():
    return _torch_version([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])


def get_requires_for_dynamic_metadata(settings=None):
    return [] if _target_torch() else [f"torch=={FALLBACK_TORCH}"]


def dynamic_metadata(field, settings=None, project=None):
    """torch==<built version>, then the plain dependencies listed under ``others``."""
    if field != "dependencies":
        raise RuntimeError(f"torch_pin provides 'dependencies' only, not {field!r}")
    version = _target_torch() or _torch_version(sys.path) or FALLBACK_TORCH
    return [f"torch=={version}", *(settings or {}).get("others", [])]
