"""The SpineRank pairwise ranking loss: functional form and nn.Module."""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence, Union

import torch

from . import _distributed, _library, _validate, reference

__all__ = ["pairwise_rank_loss", "mined_pairs", "PairwiseRankLoss", "LossOptions"]

Generator = Union[torch.Generator, int, None]
_SEED_HIGH = 2**63 - 1


def _mining_seed(max_pairs, generator: Generator) -> Optional[torch.Tensor]:
    """An int64 scalar seeding the random part of mining, drawn from ``generator``
    (a torch.Generator, an int used as the seed itself, or None for torch's
    default generator). None when there is no mining."""
    _validate.generator(generator)
    if max_pairs is None:
        return None
    if isinstance(generator, int):
        return torch.tensor(generator, dtype=torch.long)
    return torch.randint(-_SEED_HIGH, _SEED_HIGH, (), dtype=torch.long, generator=generator,
                         device=generator.device if generator is not None else "cpu")


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """The hyper-parameters of the SpineRank loss, checked once at construction."""

    scale: float = 10.0
    margin_base: float = 0.5
    margin_scale: float = 1.5
    lambda_dis: float = 1.0
    lambda_sim: float = 0.25
    severity_weight: bool = True
    pair_fn: str = "squared_hinge"
    sigma: float = 1.0
    max_pairs: Optional[int] = None
    hard_fraction: float = 0.7
    task_reduction: str = "mean"
    pair_normalization: str = "per_kind"

    def __post_init__(self):
        _validate.loss_params(pair_fn=self.pair_fn, sigma=self.sigma, max_pairs=self.max_pairs,
                              hard_fraction=self.hard_fraction, task_reduction=self.task_reduction,
                              pair_normalization=self.pair_normalization)
        # Kept, not recomputed per call (a plain attribute: torch.compile traces it).
        # Values that are no numbers raise when op_args is read, as before.
        try:
            object.__setattr__(self, "_op_args", self._schema_order())
        except (TypeError, ValueError):
            pass

    @property
    def op_args(self) -> tuple:
        """The options in the order of the op schema, after num_grades (computed once)."""
        return getattr(self, "_op_args", None) or self._schema_order()

    def _schema_order(self) -> tuple:
        return (float(self.scale), float(self.margin_base), float(self.margin_scale),
                float(self.lambda_dis), float(self.lambda_sim), bool(self.severity_weight),
                self.pair_fn, float(self.sigma), -1 if self.max_pairs is None else self.max_pairs,
                float(self.hard_fraction), self.task_reduction)


@functools.lru_cache(maxsize=64, typed=True)
def _cached_options(*values) -> LossOptions:
    return LossOptions(*values)


def _options(*values) -> LossOptions:
    """LossOptions(*values), checked once per distinct set of values (the
    functional form is called every step with the same options; a failed check
    is not cached and raises every time). torch.compile traces the checks
    instead: they cost nothing in a compiled graph."""
    if torch.compiler.is_compiling():
        return LossOptions(*values)
    return _cached_options(*values)


def _loss(scores, grades, ks, options: LossOptions, seed: Optional[torch.Tensor]):
    """(loss, counts) from the fused op, or from the reference when it is not loaded."""
    if _library.fused_for(scores):
        loss, _, counts = torch.ops.spinerank_ext.pairwise_rank_loss.default(
            scores, _validate.grades_for_kernel(grades, ks), ks, *options.op_args, seed,
            options.pair_normalization)
        return loss, counts
    return reference.pairwise_rank_loss(
        scores, grades, ks, **dataclasses.asdict(options),
        generator=None if seed is None else int(seed), return_counts=True)


def pairwise_rank_loss(
    scores: torch.Tensor,
    grades: torch.Tensor,
    num_grades: Union[int, Sequence[int], torch.Tensor],
    *,
    scale: float = 10.0,
    margin_base: float = 0.5,
    margin_scale: float = 1.5,
    lambda_dis: float = 1.0,
    lambda_sim: float = 0.25,
    severity_weight: bool = True,
    pair_fn: str = "squared_hinge",
    sigma: float = 1.0,
    max_pairs: Optional[int] = None,
    hard_fraction: float = 0.7,
    task_reduction: str = "mean",
    pair_normalization: str = "per_kind",
    generator: Generator = None,
    return_counts: bool = False,
):
    """SpineRank pairwise ranking loss (SPEC §3) as one fused op.

    Args:
        scores: (B, T) floating scores, one column per grading task.
        grades: (B, T) integer grades 0..K_t-1; negative means missing. Any
            integer dtype; unsigned dtypes (uint8..uint64) have no missing
            value, so every value of theirs is a grade and one >= K_t is
            rejected (uint64 2^64 - 1 included).
        num_grades: K_t per task (an int applies to every task), 2 <= K_t <=
            2^31 - 1 (the kernels store grades as int32; larger K raises a
            ValueError naming the task). Time and memory depend on the grades
            that occur, not on K_t, which enters only the margins and weights
            below. (The CUDA kernels take K_t <= 4096.)
        scale: S, the score range; the severity weight is S * |d| / (K - 1).
        margin_base, margin_scale: margin m = margin_base + margin_scale * |d| / (K - 1).
        lambda_dis, lambda_sim: weights of the ordinal and the same-grade terms.
        severity_weight: weight ordinal pairs by their grade gap (else 1).
        pair_fn: "squared_hinge" (w * max(0, m - r*delta)^2) or "logistic"
            (w * softplus(-sigma * r * delta), the margin unused).
        max_pairs: keep at most this many pairs per task (None: all pairs),
            an int in 1..2^63 - 1; a value >= a task's pair count keeps them all.
        hard_fraction: share of max_pairs taken by hardness; the rest is drawn
            uniformly at random from the remaining pairs.
        task_reduction: "mean" over tasks with at least one pair, "sum", or
            "none" for a (T,) vector.
        pair_normalization: how a task's kept pairs are averaged. "per_kind"
            (SpineRank): lambda_dis * (ordinal sum) / n_ordinal + lambda_sim *
            (similar sum) / n_similar. "all" (the published RankNet and
            DeepRankSVM): (lambda_dis * ordinal sum + lambda_sim * similar
            sum) / (n_ordinal + n_similar), so same-grade pairs count in the
            denominator even when lambda_sim = 0.
        generator: a torch.Generator or an int seed (-2^63 .. 2^63 - 1) for
            the random part of mining (None: torch's default generator); any
            other type raises a TypeError, also without mining.
        return_counts: also return the (T, 2) kept (ordinal, similar) pair counts.

    Returns:
        The loss (a scalar, or (T,) for task_reduction="none"), and the counts
        when ``return_counts``. Gradients flow to ``scores`` only, and to first
        order only: differentiating the gradient again (``create_graph=True``
        followed by a gradient penalty, ``gradgradcheck``, a Hessian) raises a
        RuntimeError ("second-order gradients are not supported by
        pairwise_rank_loss") instead of silently giving zero. With
        ``create_graph=True`` the first-order gradient itself is unchanged.

    Raises:
        ValueError for bad shapes, dtypes, devices, options and limits, and
        for values the kernels check (a grade >= K_t, a non-finite score of a
        non-missing grade), naming the entry; TypeError for non-tensor inputs
        and a wrong-typed ``generator``.
    """
    options = _options(scale, margin_base, margin_scale, lambda_dis, lambda_sim, severity_weight,
                       pair_fn, sigma, max_pairs, hard_fraction, task_reduction, pair_normalization)
    _validate.scores_and_grades(scores, grades)
    ks = _validate.num_grades_tuple(num_grades, scores.shape[1])
    loss, counts = _loss(scores, grades, ks, options, _mining_seed(max_pairs, generator))
    return (loss, counts) if return_counts else loss


def mined_pairs(
    scores: torch.Tensor,
    grades: torch.Tensor,
    num_grades: Union[int, Sequence[int], torch.Tensor],
    *,
    max_pairs: int,
    hard_fraction: float = 0.7,
    margin_base: float = 0.5,
    margin_scale: float = 1.5,
    generator: Generator = None,
) -> torch.Tensor:
    """The pairs :func:`pairwise_rank_loss` keeps with these mining settings.

    Returns (T, max_pairs, 2) int64 batch rows (i < j), sorted by (i, j) and padded
    with -1 where a task has fewer pairs. The same ``generator`` state (or int
    seed) gives the same pairs as the loss. Arguments and limits as in
    :func:`pairwise_rank_loss`; the output has T * max_pairs * 2 entries, so
    max_pairs is bounded by memory in practice.
    """
    _validate.scores_and_grades(scores, grades)
    ks = _validate.num_grades_tuple(num_grades, scores.shape[1])
    if max_pairs is None:
        raise ValueError("mined_pairs needs max_pairs (an int >= 1)")
    _validate.mining(max_pairs, hard_fraction)
    seed = _mining_seed(max_pairs, generator)
    if not _library.fused_for(scores):
        return reference.mined_pairs(scores, grades, ks, margin_base=margin_base,
                                     margin_scale=margin_scale, max_pairs=max_pairs,
                                     hard_fraction=hard_fraction, generator=int(seed))
    return torch.ops.spinerank_ext.mined_pairs(
        scores.detach(), _validate.grades_for_kernel(grades, ks), ks, float(margin_base), float(margin_scale),
        max_pairs, float(hard_fraction), seed)


class PairwiseRankLoss(torch.nn.Module):
    """SpineRank pairwise ranking loss; see :func:`pairwise_rank_loss`.

    ``loss_fn = PairwiseRankLoss(num_grades)`` then ``loss_fn(scores, grades)``.
    The parameters (options, the range of each K, ``generator``) are checked
    once, here; the number of tasks at the first call with each T. The (T, 2)
    pair counts of the last call are kept in ``last_counts``.

    Mining seeds: with an int ``generator`` the k-th call uses seed
    ``generator + k``, kept in the int64 buffers ``mining_seed`` and
    ``mining_step``. Runs are reproducible, every call draws new random pairs,
    the stream resumes from a ``state_dict``, and it works under
    ``torch.compile(fullgraph=True)``. A ``torch.Generator`` is used as given
    (``torch.compile`` cannot trace generator objects); None uses torch's
    default generator.

    Data-parallel training (``global_pairs=True``): when ``torch.distributed``
    has a default process group of W > 1 ranks, every call gathers the scores
    and grades of all ranks (batch sizes may differ) and computes the loss on
    that global batch, so pairs span the whole global batch, not just the
    rank's share. Then:

    * The returned value (and ``last_counts``) is the same on every rank and
      equals the single-process loss on the concatenation of the ranks' batches
      in rank order.
    * Scaling rule: the gradient reaching this rank's ``scores`` is W times its
      rows of the global loss's gradient (the gather's backward takes the local
      slice and multiplies it by W; it communicates nothing). DDP sums the
      ranks' parameter gradients and divides by W, so after its averaging the
      parameter gradients are exactly those of one process on the global
      batch. If you reduce gradients yourself with a plain sum, divide by W.
    * Mining draws pairs from rank 0's seed (it travels with the gathered batch
      sizes), so every rank keeps the same pairs, whether the generator is an
      int seed or a ``torch.Generator`` whose state differs between ranks. Each
      rank's own generator still advances as usual.
    * Every rank must call the loss the same number of times (it is a
      collective).

    Without an initialised process group, or with W = 1, ``global_pairs=True``
    is the plain local loss.
    """

    def __init__(self, num_grades, *, scale=10.0, margin_base=0.5, margin_scale=1.5,
                 lambda_dis=1.0, lambda_sim=0.25, severity_weight=True,
                 pair_fn="squared_hinge", sigma=1.0, max_pairs=None, hard_fraction=0.7,
                 task_reduction="mean", pair_normalization="per_kind", generator: Generator = None,
                 global_pairs: bool = False):
        super().__init__()
        self.global_pairs = bool(global_pairs)
        self.options = LossOptions(scale, margin_base, margin_scale, lambda_dis, lambda_sim,
                                   severity_weight, pair_fn, sigma, max_pairs, hard_fraction,
                                   task_reduction, pair_normalization)
        if isinstance(num_grades, torch.Tensor):
            num_grades = num_grades.tolist()
        # K is checked here (its range; the number of tasks at the first call).
        if isinstance(num_grades, int):
            _validate.num_grades_tuple(num_grades, 1)
        elif isinstance(num_grades, Sequence) and not isinstance(num_grades, str):
            num_grades = tuple(num_grades)
            _validate.num_grades_tuple(num_grades, len(num_grades))
        else:
            raise ValueError(f"num_grades must be an int or a sequence of ints, got {num_grades!r}")
        self.num_grades = num_grades
        self._ks: dict[int, tuple[int, ...]] = {}
        _validate.generator(generator)
        if isinstance(generator, int):
            self.register_buffer("mining_seed", torch.tensor(generator, dtype=torch.long))
            self.register_buffer("mining_step", torch.zeros((), dtype=torch.long))
            generator = None
        else:
            self.mining_seed = self.mining_step = None
        self.generator = generator
        self.last_counts: Optional[torch.Tensor] = None

    def _num_grades(self, num_tasks: int) -> tuple[int, ...]:
        ks = self._ks.get(num_tasks)
        if ks is None:
            ks = self._ks[num_tasks] = _validate.num_grades_tuple(self.num_grades, num_tasks)
        return ks

    def _next_seed(self) -> Optional[torch.Tensor]:
        if self.options.max_pairs is None:
            return None
        if self.mining_seed is None:
            return _mining_seed(self.options.max_pairs, self.generator)
        seed = self.mining_seed + self.mining_step
        with torch.no_grad():
            self.mining_step.add_(1)
        return seed

    def forward(self, scores: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        _validate.scores_and_grades(scores, grades)
        ks = self._num_grades(scores.shape[1])
        seed = self._next_seed()
        if self.global_pairs and _distributed.active():
            scores, grades, seed = _distributed.gather_batch(scores, grades, seed)
        loss, self.last_counts = _loss(scores, grades, ks, self.options, seed)
        return loss

    def extra_repr(self) -> str:
        o = self.options
        mining = "all pairs" if o.max_pairs is None else f"max_pairs={o.max_pairs}, hard_fraction={o.hard_fraction}"
        return (f"num_grades={self.num_grades}, pair_fn={o.pair_fn!r}, scale={o.scale}, "
                f"margin=({o.margin_base}, {o.margin_scale}), lambda=({o.lambda_dis}, "
                f"{o.lambda_sim}), severity_weight={o.severity_weight}, {mining}, "
                f"task_reduction={o.task_reduction!r}"
                + (f", pair_normalization={o.pair_normalization!r}" if o.pair_normalization != "per_kind" else "")
                + (", global_pairs=True" if self.global_pairs else ""))
