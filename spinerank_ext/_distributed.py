"""The global batch of a data-parallel step: scores and grades of every rank.

Used by ``PairwiseRankLoss(global_pairs=True)``. Ranks may hold different batch
sizes (the last batch of an epoch, uneven shards): a small header is gathered
first, then every rank's rows padded to the largest batch, and the padding is
cut off again. The header also carries rank 0's mining seed, so that every rank
mines the same pairs whatever its own generator state.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def active() -> bool:
    """True when a default process group with more than one rank exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def _padded(rows: torch.Tensor, length: int) -> torch.Tensor:
    if rows.shape[0] == length:
        return rows
    pad = rows.new_zeros((length - rows.shape[0], *rows.shape[1:]))
    return torch.cat([rows, pad])


class _GatherBatch(torch.autograd.Function):
    """Every rank's (B_r, T) scores and grades, concatenated in rank order.

    Both travel in one float64 message (every integer grade and every score of
    a floating dtype up to float64 is exact in it): one collective, not two.

    Backward returns world_size times this rank's slice of the incoming
    gradient and communicates nothing: every rank computes the same loss on the
    same global batch, so its gradient for another rank's rows is that rank's
    business, and DDP's division of the summed parameter gradients by
    world_size is undone by the factor (see PairwiseRankLoss)."""

    @staticmethod
    def forward(ctx, scores, grades, sizes):
        packed = torch.cat([scores.detach().double(), grades.double()], 1)
        parts = _all_gather(_padded(packed, max(sizes)))
        rows = torch.cat([part[:n] for part, n in zip(parts, sizes)])
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        ctx.world_size = len(sizes)
        all_grades = rows[:, scores.shape[1]:].long()
        ctx.mark_non_differentiable(all_grades)
        return rows[:, :scores.shape[1]].to(scores.dtype), all_grades

    @staticmethod
    def backward(ctx, grad, _):
        return grad[ctx.start:ctx.stop] * ctx.world_size, None, None


def gather_batch(scores: torch.Tensor, grades: torch.Tensor, seed: Optional[torch.Tensor]):
    """(global scores, global grades, rank 0's seed) over the default process group.

    Raises the same ValueError on every rank if the ranks disagree on the number
    of tasks or on whether there is a mining seed, so that no rank is left
    waiting in a collective the others never enter.
    """
    device = scores.device
    header = torch.tensor([scores.shape[0], scores.shape[1], seed is not None, 0], dtype=torch.long,
                          device=device)
    if seed is not None:
        header[3] = seed.to(device=device, dtype=torch.long)
    headers = torch.stack(_all_gather(header)).tolist()
    if len({h[1] for h in headers}) > 1:
        raise ValueError("global_pairs: the ranks' scores have different numbers of tasks T "
                         f"({', '.join(f'rank {r}: {h[1]}' for r, h in enumerate(headers))})")
    if len({h[2] for h in headers}) > 1:
        raise ValueError("global_pairs: some ranks mine pairs (max_pairs set) and others do not")
    all_scores, all_grades = _GatherBatch.apply(scores, grades, [h[0] for h in headers])
    seed = None if seed is None else header.new_tensor(headers[0][3])
    return all_scores, all_grades, seed
