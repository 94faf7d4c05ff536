"""Peak extra memory of one call, on CPU (Linux): the rise of the process's
resident-set high-water mark (VmHWM) over its resident set just before the call.

Every byte a call touches counts, whoever allocates it: torch tensors, the
kernels' std::vectors, autograd's saved tensors. To keep memory freed by
earlier calls from hiding the call's own, glibc is told to hand every block of
64 KiB or more straight back to the system (mallopt: fixed mmap threshold, trim
threshold 0), the heap is trimmed, and the high-water mark is reset through
/proc/self/clear_refs right before the call. Blocks under 64 KiB can still be
reused from the heap, so the figure is exact to about 0.1 MB.

Where that is not available (not Linux, not glibc, /proc not writable) the
measurement returns None and the benchmark records no memory figure.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re

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
