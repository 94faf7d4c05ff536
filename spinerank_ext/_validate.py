"""The Python layer of the argument checks: the public API, the fake (meta)
kernels and the plain-PyTorch references.

Two layers check each op's arguments. These checks run first, before any
kernel, so that a bad call fails early with a message that names the argument
and what came, also under torch.compile and torch.export (the fake kernels
call them). The C++ checks (csrc/loss/args.h, csrc/loss/check_values.h,
csrc/augment/args.h) are the last line: the ops can be called directly through
torch.ops, and only the kernels see the data of a call (finite scores, grades
below K), except for the references, which check it here (`values`). Both
layers name the same problem with the same key phrase, "<what must hold>, got
<what came>"; tests assert that phrase on each layer, not identical text.

Limits: 2 <= K <= MAX_NUM_GRADES (2^31 - 1), 1 <= max_pairs <= 2^63 - 1, an
int generator seed within int64; the batch size B <= 2^31 - 1 (C++).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

PAIR_FNS = ("squared_hinge", "logistic")
TASK_REDUCTIONS = ("mean", "sum", "none")
PAIR_NORMALIZATIONS = ("per_kind", "all")

#: The largest number of grades K of a task (kMaxNumGrades in
#: csrc/loss/args.h): grades 0..K-1 must fit the kernels' int32
#: grade storage. The kernels' time and memory depend on the grades that occur,
#: not on K.
MAX_NUM_GRADES = 2**31 - 1
#: The largest max_pairs (the op schema's int64); any value at or above a
#: task's number of pairs keeps all of them.
MAX_MAX_PAIRS = 2**63 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def num_grades_tuple(num_grades, num_tasks: int) -> tuple[int, ...]:
    """K per task from an int (same K for every task), a sequence or a 1-D tensor."""
    if isinstance(num_grades, torch.Tensor):
        if num_grades.dim() > 1 or num_grades.is_floating_point():
            raise ValueError(f"num_grades must be an int or a 1-D integer sequence, got {num_grades!r}")
        num_grades = num_grades.tolist()
    if torch.compiler.is_compiling():
        return _num_grades_tuple(num_grades, num_tasks)
    # Plain ints only: a cache key equal to an int tuple, such as (4.0, True),
    # must not pass for it.
    if type(num_grades) is int or (type(num_grades) is tuple and all(type(k) is int for k in num_grades)):
        return _checked_num_grades(num_grades, num_tasks)
    return _num_grades_tuple(num_grades, num_tasks)


# The loss is called once per training step with the same K: at B = 32 its
# checks are a visible part of the call. Only successful checks are cached.
@functools.lru_cache(maxsize=64)
def _checked_num_grades(num_grades, num_tasks: int) -> tuple[int, ...]:
    return _num_grades_tuple(num_grades, num_tasks)


def _num_grades_tuple(num_grades, num_tasks: int) -> tuple[int, ...]:
    if isinstance(num_grades, int):
        ks = (num_grades,) * num_tasks
    elif isinstance(num_grades, Sequence) and all(isinstance(k, int) for k in num_grades):
        ks = tuple(num_grades)
    else:
        raise ValueError(f"num_grades must be an int or a sequence of ints, got {num_grades!r}")
    if len(ks) != num_tasks:
        raise ValueError(f"num_grades has {len(ks)} entries but scores has T = {num_tasks} tasks")
    for t, k in enumerate(ks):
        if k < 2:
            raise ValueError(f"num_grades[{t}] = {k}: every task needs K >= 2 grades")
        if k > MAX_NUM_GRADES:
            raise ValueError(f"num_grades[{t}] = {k} exceeds the maximum K = {MAX_NUM_GRADES} "
                             "(grades are stored as int32)")
    return ks


def scores_and_grades(scores, grades) -> None:
    if not isinstance(scores, torch.Tensor) or not isinstance(grades, torch.Tensor):
        raise TypeError(
            f"scores and grades must be tensors, got {type(scores).__name__} and {type(grades).__name__}"
        )
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (B, T), got shape {tuple(scores.shape)}")
    if grades.shape != scores.shape:
        raise ValueError(
            f"grades must have the shape of scores {tuple(scores.shape)}, got {tuple(grades.shape)}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating tensor, got {scores.dtype}")
    if grades.is_floating_point() or grades.is_complex() or grades.dtype == torch.bool:
        raise ValueError(f"grades must be an integer tensor (negative = missing), got {grades.dtype}")
    if grades.device != scores.device:
        raise ValueError(
            f"scores and grades must be on the same device, got {scores.device} and {grades.device}"
        )


def loss_params(*, pair_fn, sigma, max_pairs, hard_fraction, task_reduction,
                pair_normalization="per_kind") -> None:
    if pair_fn not in PAIR_FNS:
        raise ValueError(f"pair_fn must be one of {PAIR_FNS}, got {pair_fn!r}")
    if pair_normalization not in PAIR_NORMALIZATIONS:
        raise ValueError(f"pair_normalization must be one of {PAIR_NORMALIZATIONS}, got {pair_normalization!r}")
    if task_reduction not in TASK_REDUCTIONS:
        raise ValueError(f"task_reduction must be one of {TASK_REDUCTIONS}, got {task_reduction!r}")
    if pair_fn == "logistic" and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    mining(max_pairs, hard_fraction)


def mining(max_pairs, hard_fraction) -> None:
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be None (all pairs) or an int >= 1, got {max_pairs!r}")
    if max_pairs is not None and max_pairs > MAX_MAX_PAIRS:
        raise ValueError(f"max_pairs = {max_pairs} exceeds the maximum {MAX_MAX_PAIRS} (2^63 - 1); "
                         "any value >= a task's number of pairs keeps all of them")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")


def generator(value) -> None:
    """The random source of mining: a torch.Generator, an int seed (int64) or None."""
    if value is None or isinstance(value, torch.Generator):
        return
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"generator: an int seed must fit in int64 (-2^63 .. 2^63 - 1), got {value}")
        return
    raise TypeError("generator must be a torch.Generator, an int seed or None, "
                    f"got {type(value).__name__} {value!r}")


def grades_for_kernel(grades: torch.Tensor, num_grades) -> torch.Tensor:
    """The grades as the kernels take them: int64 and int32 as they are, every
    other integer dtype converted to int64.

    Unsigned grades (uint8 .. uint64) have no negative values, so none of them
    means "missing"; like any grade >= K they are rejected by the kernels' range
    check. uint64 values >= 2^63, which int64 cannot hold (they would wrap to
    negative, i.e. "missing"), are rejected here with the same message.
    """
    if grades.dtype in (torch.int64, torch.int32):
        return grades
    if grades.dtype == torch.uint64:
        wide = grades.view(torch.int64)
        ks = torch.tensor(num_grades, dtype=torch.int64, device=grades.device)
        bad = (wide < 0) | (wide >= ks)  # < 0: a value >= 2^63
        if bad.any():
            b, t = (int(v) for v in bad.nonzero()[0])
            value = int(wide[b, t]) % 2**64
            raise ValueError(f"grade {value} at row {b}, task {t} is out of range: task {t} has "
                             f"K = {num_grades[t]} grades (0..{num_grades[t] - 1}; unsigned grades "
                             "have no missing value)")
    return grades.long()


def values(scores: torch.Tensor, grades: torch.Tensor, num_grades) -> None:
    """The data checks of the kernels (csrc/loss/check_values.h), for the paths
    that never reach them: grades below K, finite scores where a grade is given."""
    too_large = grades >= torch.tensor(num_grades, device=grades.device)
    if too_large.any():
        b, t = (int(v) for v in too_large.nonzero()[0])
        raise ValueError(f"grade {int(grades[b, t])} at row {b}, task {t} is out of range: task {t} has "
                         f"K = {num_grades[t]} grades (0..{num_grades[t] - 1}; negative = missing)")
    bad = ~torch.isfinite(scores) & (grades >= 0)
    if bad.any():
        b, t = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"scores must be finite: got {float(scores[b, t])} at row {b}, task {t}")


# ---------------------------------------------------------------------------
# tta_views and augment (their C++ layer: csrc/augment/args.h).

MAX_TTA_LIST_SIZE = 64  # kMaxTtaListSize in csrc/augment/tta_math.h
MAX_SHIFT = 2**40  # kMaxShift in csrc/augment/args.h
NUM_AUGMENT_PARAMS = 7


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def volume(vol) -> None:
    if not isinstance(vol, torch.Tensor):
        raise TypeError(f"vol must be a tensor, got {type(vol).__name__}")
    if vol.dim() != 5:
        raise ValueError(f"vol must have shape (N, C, D, H, W), got {vol.dim()} dimension(s) {list(vol.shape)}")
    if not vol.is_floating_point():
        raise ValueError(f"vol must be a floating tensor, got {vol.dtype}")


def out_size(size) -> list[int]:
    """(d, h, w) as a list of positive ints."""
    if not isinstance(size, Sequence) or len(size) != 3 or not all(_is_int(s) for s in size):
        raise ValueError(f"out_size must be (d, h, w), got {list(size) if isinstance(size, Sequence) else size!r}")
    if min(size) <= 0:
        raise ValueError(f"out_size must be positive, got {list(size)}")
    return list(size)


def _grid_list(name: str, values, kind) -> list:
    if not isinstance(values, Sequence) or isinstance(values, str) or not all(kind(v) for v in values):
        what = "bools" if kind is _is_bool else "ints"
        raise ValueError(f"{name} must be a sequence of {what}, got {values!r}")
    if len(values) == 0:
        raise ValueError(f"{name} must not be empty")
    if len(values) > MAX_TTA_LIST_SIZE:
        raise ValueError(f"{name} has {len(values)} entries, at most {MAX_TTA_LIST_SIZE} are supported")
    return list(values)


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def tta_grid(flips, shifts_h, shifts_w, shifts_d) -> tuple[list, list, list, list]:
    """The four lists of the view grid, checked; flips as bools, shifts as ints."""
    grid = [_grid_list("flips", flips, _is_bool)]
    for name, shifts in (("shifts_h", shifts_h), ("shifts_w", shifts_w), ("shifts_d", shifts_d)):
        shifts = _grid_list(name, shifts, _is_int)
        for i, s in enumerate(shifts):
            if not -MAX_SHIFT < s < MAX_SHIFT:
                raise ValueError(f"{name}[{i}] = {s} is out of range (|shift| < 2^40)")
        grid.append(shifts)
    return tuple(grid)


def augment_params(vol, params) -> None:
    if not isinstance(params, torch.Tensor):
        raise TypeError(f"params must be a tensor, got {type(params).__name__}")
    N = vol.shape[0]
    if params.dim() != 2 or params.shape[0] != N or params.shape[1] != NUM_AUGMENT_PARAMS:
        raise ValueError(f"params must have shape (N, 7) with N = {N}, got {list(params.shape)}")
    if not params.is_floating_point():
        raise ValueError(f"params must be a floating tensor, got {params.dtype}")
    if params.device != vol.device:
        raise ValueError(f"params must be on the device of vol ({vol.device}), got {params.device}")
