"""Peak extra memory of one call, on CPU (Linux): the rise of the process's
resident-set high-water mark (VmHWM) over its resident set just before the call.

Every byte a call touches counts, whoever allocates it: torch tensors, the
kernels' std::vectors, autograd's saved tensors. To keep memory freed by
earlier calls from hiding the call's own, glibc is told to hand every block of
64 KiB or more straight back to the system (mallopt: fixed mmap threshold, trim
threshold 0), the heap is trimmed, and the high-water mark is reset through
/proc/self/clear_refs right before the call. Blocks under 64 KiB can still be
reused from the heap, so the figure is exact to about 0.1 MB.

Those allocator settings would slow every later allocation of the process
(each large block a fresh mmap), so the benchmarks measure in a separate
process: ``measure_case`` runs ``python benchmarks/memory.py FILE BUILDER
KWARGS``, which builds the same step as the timed case, runs it twice to warm
up (lazily loaded code and thread pools are not the call's memory), then
measures one more call. On CUDA the figure is the rise of
``torch.cuda.max_memory_allocated`` over the memory allocated before the call,
measured in the benchmark's own process.

Where the CPU measurement is not available (not Linux, not glibc, /proc not
writable) it returns None and the benchmark records no memory figure.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_STATUS = "/proc/self/status"


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_configured = False


def _kib(field):
    return int(re.search(rf"^{field}:\s+(\d+) kB", open(_STATUS).read(), re.M).group(1))


def available():
    try:
        _kib("VmHWM")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, AttributeError):
        return False
    return _LIBC is not None


def peak_extra_bytes(fn):
    """Runs fn() once; returns (peak extra resident bytes or None, fn's result)."""
    global _configured
    if not available():
        return None, fn()
    if not _configured:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, 0)
        _configured = True
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _kib("VmRSS")
    result = fn()
    return max(0, _kib("VmHWM") - before) * 1024, result


def cuda_peak_extra_bytes(fn):
    """Runs fn() once on the current CUDA device; returns (peak extra allocated bytes, result)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before, result


def measure_case(module_file, builder, **kwargs):
    """Peak extra CPU memory of one call of ``module.builder(**kwargs)()``, in a
    fresh process (see the module docstring); None if it cannot be measured."""
    command = [sys.executable, __file__, str(module_file), builder, json.dumps(kwargs)]
    env = dict(os.environ, SPINERANK_EXT_REQUIRE_COMPILED="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {builder}({kwargs}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def _main(module_file, builder, kwargs):
    root = pathlib.Path(__file__).resolve().parent.parent
    # The installed package, never the source tree (as in benchmarks/conftest.py).
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != root]
    sys.path.insert(0, str(pathlib.Path(module_file).parent))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / ".torchinductor"))
    spec = importlib.util.spec_from_file_location("bench_case", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step = getattr(module, builder)(**json.loads(kwargs))
    step()
    step()
    peak, _ = peak_extra_bytes(step)
    print(json.dumps({"peak_extra_bytes": peak}))


if __name__ == "__main__":
    _main(*sys.argv[1:])
