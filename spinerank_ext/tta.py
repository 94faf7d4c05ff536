"""Test-time augmentation (SPEC §4): the view grid and the merge of its predictions.

    views = tta_views(vol, (12, 128, 256))            # (N, 54, C, 12, 128, 256)
    pred = model(views.flatten(0, 1)).unflatten(0, (N, 54))   # (N, 54, T)
    mean, std = tta_merge(pred, tta_view_flipped())   # (N, T) each

``tta_merge`` is plain PyTorch: a gather and two reductions over at most a few
hundred views, which a fused kernel would not make measurably faster.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _library, _validate, reference

__all__ = ["LEFT_RIGHT_TASKS", "tta_merge", "tta_view_flipped", "tta_views"]

#: Task columns that trade places under a left-right flip: ForaminalStenosis
#: Left and Right in the default task table (SPEC §2).
LEFT_RIGHT_TASKS = ((6, 7),)

_FLIPS = (False, True)
_SHIFTS_H = (-16, 0, 16)
_SHIFTS_W = (-16, 0, 16)
_SHIFTS_D = (-1, 0, 1)


def tta_views(vol: torch.Tensor, out_size: Sequence[int], flips: Sequence[bool] = _FLIPS,
              shifts_h: Sequence[int] = _SHIFTS_H, shifts_w: Sequence[int] = _SHIFTS_W,
              shifts_d: Sequence[int] = _SHIFTS_D, fill: float = 0.0) -> torch.Tensor:
    """Every test-time view of a batch of volumes, in one pass over the input.

    Args:
        vol: (N, C, D, H, W) floating volumes (D = sagittal slices).
        out_size: (d, h, w) of each view, centred in the volume: offsets
            z0 = (D - d) // 2, y0 = (H - h) // 2, x0 = (W - w) // 2 (a larger crop
            than the volume is allowed).
        flips, shifts_h, shifts_w, shifts_d: the grid; each list has 1..64 entries.
        fill: the value of voxels whose source lies outside the volume.

    Returns:
        (N, V, C, d, h, w), V = |flips|·|shifts_h|·|shifts_w|·|shifts_d|. View
        v = ((f·|shifts_h| + a)·|shifts_w| + b)·|shifts_d| + c holds
        vol[n, ch, z0 + (flip ? d-1-k : k) + dz, y0 + i + dy, x0 + j + dx] at
        (k, i, j): the flip reverses the slice axis (left-right in a sagittal
        stack). With the defaults, view 13 is the plain centre crop.
        Forward only: the result never requires grad, even when ``vol`` does
        (no gradient flows back to ``vol``; the op, its reference fallback
        and a direct ``torch.ops.spinerank_ext.tta_views`` call alike).
    """
    _validate.volume(vol)
    size = _validate.out_size(out_size)
    grid = _validate.tta_grid(flips, shifts_h, shifts_w, shifts_d)
    vol = vol.detach()
    if _library.fused_for(vol):
        return torch.ops.spinerank_ext.tta_views(vol, size, *grid, float(fill))
    return reference.tta_views(vol, size, *grid, fill=float(fill))


def tta_view_flipped(flips: Sequence[bool] = _FLIPS, shifts_h: Sequence[int] = _SHIFTS_H,
                     shifts_w: Sequence[int] = _SHIFTS_W, shifts_d: Sequence[int] = _SHIFTS_D,
                     device=None) -> torch.Tensor:
    """(V,) bool: which views of :func:`tta_views` with this grid are flipped."""
    flips, shifts_h, shifts_w, shifts_d = _validate.tta_grid(flips, shifts_h, shifts_w, shifts_d)
    per_flip = len(shifts_h) * len(shifts_w) * len(shifts_d)
    return torch.tensor(flips, dtype=torch.bool, device=device).repeat_interleave(per_flip)


def _swap_pairs(swap, num_tasks: int) -> list[tuple[int, int]]:
    pairs = [tuple(p) for p in swap]
    seen: set[int] = set()
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(t, int) and not isinstance(t, bool) for t in pair):
            raise ValueError(f"swap must be a sequence of (task, task) pairs, got {swap!r}")
        if not all(0 <= t < num_tasks for t in pair):
            raise ValueError(f"swap pair {pair} is out of range for T = {num_tasks} tasks "
                             "(pass swap=() when no task has a left/right twin)")
        if pair[0] == pair[1] or seen & set(pair):
            raise ValueError(f"swap pairs must name distinct tasks, each at most once, got {swap!r}")
        seen.update(pair)
    return pairs


def _flipped_mask(view_flipped, num_views: int, device) -> torch.Tensor:
    mask = torch.as_tensor(view_flipped, device=device)
    if mask.dtype != torch.bool or mask.dim() != 1:
        raise ValueError(f"view_flipped must be a 1-D bool tensor or sequence, got {view_flipped!r}")
    if mask.shape[0] != num_views:
        raise ValueError(f"view_flipped has {mask.shape[0]} entries but pred has V = {num_views} views")
    return mask


def _check_pred(pred: torch.Tensor, what: str, dims: tuple[int, ...], shapes: str) -> None:
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"{what} must be a tensor, got {type(pred).__name__}")
    if pred.dim() not in dims:
        raise ValueError(f"{what} must have shape {shapes}, got {list(pred.shape)}")
    if not pred.is_floating_point():
        raise ValueError(f"{what} must be a floating tensor, got {pred.dtype}")


def tta_merge(pred, view_flipped, swap=LEFT_RIGHT_TASKS):
    """Mean and spread of predictions over the test-time views.

    On flipped views the left/right task columns of each ``swap`` pair are
    exchanged first: a flipped disc's left foramen is the original's right one.

    Args:
        pred: the model's output per view, in either layout:
            a tensor (N, V, T) of scores or (N, V, T, K) of logits/probabilities
            (one K for every task), or a list of T tensors (N, V, K_t), one per
            task (the per-task heads' logits). Whatever is given is averaged
            as is: pass probabilities to average probabilities.
        view_flipped: (V,) bool, e.g. :func:`tta_view_flipped`.
        swap: pairs of task indices to exchange on flipped views; ``()`` for none.

    Returns:
        (mean, std) over the views: tensors without the V axis, or lists of
        them for list input. std is the population standard deviation
        (correction 0), so a single view gives 0 rather than NaN.
    """
    if isinstance(pred, (list, tuple)):
        return _merge_per_task(list(pred), view_flipped, swap)
    _check_pred(pred, "pred", (3, 4), "(N, V, T) or (N, V, T, K)")
    pairs = _swap_pairs(swap, pred.shape[2])
    flipped = _flipped_mask(view_flipped, pred.shape[1], pred.device)
    order = list(range(pred.shape[2]))
    for a, b in pairs:
        order[a], order[b] = b, a
    swapped = pred[:, :, order]
    aligned = torch.where(flipped.view(1, -1, *([1] * (pred.dim() - 2))), swapped, pred)
    return aligned.mean(dim=1), aligned.std(dim=1, correction=0)


def _merge_per_task(preds: list, view_flipped, swap):
    if not preds:
        raise ValueError("pred must not be an empty list")
    for t, p in enumerate(preds):
        _check_pred(p, f"pred[{t}]", (3,), "(N, V, K)")
        if p.shape[:2] != preds[0].shape[:2]:
            raise ValueError(f"pred[{t}] has (N, V) = {tuple(p.shape[:2])} but pred[0] has {tuple(preds[0].shape[:2])}")
    flipped = _flipped_mask(view_flipped, preds[0].shape[1], preds[0].device)
    aligned = list(preds)
    for a, b in _swap_pairs(swap, len(preds)):
        if preds[a].shape != preds[b].shape:
            raise ValueError(f"swap pair ({a}, {b}): the tasks have different shapes "
                             f"{list(preds[a].shape)} and {list(preds[b].shape)}")
        mask = flipped.view(1, -1, *([1] * (preds[a].dim() - 2)))
        aligned[a] = torch.where(mask, preds[b], preds[a])
        aligned[b] = torch.where(mask, preds[a], preds[b])
    return [p.mean(dim=1) for p in aligned], [p.std(dim=1, correction=0) for p in aligned]
