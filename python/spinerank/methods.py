"""The training methods compared in the paper (SPEC §7), all on the same encoder
and protocol: what the classification heads output, their phase-1 loss, how
class probabilities and grades are read from them, and, for the ranking
methods, the options of the phase-2 pairwise loss.

- ``ce``: inverse-frequency weighted cross-entropy; grade = argmax.
- ``corn``: CORN (Shi et al., 2021), K-1 conditional binary logits per task.
- ``mae``: MAE_l, |E[grade] - y| with E over the softmax, class-weighted,
  averaged over the labelled discs (published code).
- ``ranknet``, ``deeprank``, ``spinerank``: weighted CE in phase 1, then the
  ranking heads trained with ``PairwiseRankLoss`` (RankNet, DeepRankSVM and
  SpineRank options of SPEC §3); their grades come from score thresholds.
  RankNet is w * softplus(-2 r delta) and DeepRankSVM w * max(0, 2 - r delta)^2,
  each over all kept pairs of a task (``pair_normalization="all"``) without a
  similarity term, as the published code computes them; ``method_options``
  (RANK_OPTION_NAMES) gives the paper text's variants. ``grade_anchor_loss``
  is the optional phase-2 anchor term of the ranking methods
  (``TrainConfig.rank_anchor``).

The registry at the end of this module (``register``) is the one list of
methods: their names and order (``names()``, ``METHOD_NAMES``), which of them
rank (``ranking_names()``), the choices and help of ``spinerank train
--method`` and ``compare --methods`` and ``TrainConfig.validate`` all come from
it. A new method is a ``Method`` (or subclass) instance and a ``register`` call
with its one-line description.
"""
from __future__ import annotations

import dataclasses
import re

import torch
import torch.nn.functional as F


def _task_mean(per_task: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the tasks that contributed; a batch without any label gives a
    zero that still depends on the logits (backward works, gradient 0)."""
    if not per_task:
        return logits[0].sum() * 0.0
    return torch.stack(per_task).mean()


def weighted_cross_entropy(logits: list[torch.Tensor], grades: torch.Tensor, weights: list[torch.Tensor]):
    """Mean over tasks with labels in the batch of each task's class-weighted CE
    (normalised by the summed weights of its labelled samples, as torch does)."""
    losses = []
    for t, (lt, wt) in enumerate(zip(logits, weights)):
        y = grades[:, t]
        if (y >= 0).any() and wt[y[y >= 0]].sum() > 0:
            losses.append(F.cross_entropy(lt.float(), y, weight=wt, ignore_index=-1))
    return _task_mean(losses, logits)


def grade_anchor_loss(scores: torch.Tensor, grades: torch.Tensor, num_grades, scale: float) -> torch.Tensor:
    """The anchor term of phase 2 (``TrainConfig.rank_anchor``): how far each
    labelled score lies from its grade's centre on the score scale, in grade steps.

    For task t with K_t grades the centres are c_y = y * S / (K_t - 1) (0, S/2, S
    for K = 3; the fixed thresholds (c + 0.5) * S / (K - 1) lie halfway between
    them), and the term is

        mean over the tasks with a label in the batch of
        mean over that task's labelled discs of ((s - c_y) / (S / (K_t - 1)))^2

    Grades -1 are unlabelled and left out; a task without labels in the batch
    does not count, and a batch without any label gives 0 (gradient 0).
    Dividing by the grade spacing S / (K_t - 1) makes the term unit-free and the
    same for K = 3 and K = 5 tasks. ``scores`` (B, T), ``grades`` (B, T) integer,
    ``num_grades`` the T values K_t (a sequence or tensor). Computed in float32 at least (float64 stays
    float64); no host synchronisation.
    """
    if scores.dim() != 2 or grades.shape != scores.shape:
        raise ValueError(f"grade_anchor_loss: scores and grades must both be (B, T), got {tuple(scores.shape)} "
                         f"and {tuple(grades.shape)}")
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    k = torch.as_tensor(num_grades if torch.is_tensor(num_grades) else list(num_grades), dtype=scores.dtype,
                        device=scores.device)
    if k.shape != scores.shape[1:]:
        raise ValueError(f"grade_anchor_loss: {k.numel()} num_grades for {scores.shape[1]} tasks")
    spacing = float(scale) / (k - 1)  # (T,)
    labelled = grades >= 0
    steps = scores / spacing - grades.clamp(min=0).to(scores.dtype)  # (s - c_y) / spacing
    squared = torch.where(labelled, steps.square(), torch.zeros_like(steps))
    count = labelled.sum(0)  # (T,)
    per_task = squared.sum(0) / count.clamp(min=1).to(scores.dtype)
    has = (count > 0).to(scores.dtype)
    return (per_task * has).sum() / has.sum().clamp(min=1)


@dataclasses.dataclass(frozen=True)
class Method:
    """Weighted cross-entropy on K logits per task (``ce`` and, in phase 1, the
    ranking methods); subclasses change the head, loss and read-out."""

    name: str
    ranking: bool = False
    #: PairwiseRankLoss keyword overrides of a ranking method (phase 2)
    rank_options: tuple[tuple[str, object], ...] = ()

    def head_size(self, k: int) -> int:
        return k

    def phase1_loss(self, logits: list[torch.Tensor], grades: torch.Tensor, weights: list[torch.Tensor]):
        return weighted_cross_entropy(logits, grades, weights)

    def loss_options(self) -> dict:
        return dict(self.rank_options)

    def class_probs(self, logits_t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits_t.float(), dim=1)

    def grade_from_probs(self, probs_t: torch.Tensor) -> torch.Tensor:
        return probs_t.argmax(dim=1)


@dataclasses.dataclass(frozen=True)
class Corn(Method):
    """CORN: logit k models P(y > k | y >= k). Task t's loss is the binary
    cross-entropy of logit k against 1[y > k] over the samples with y >= k
    (all samples for k = 0), summed over k and divided by the summed subset
    sizes. With ``class_weighted`` every term of a sample is weighted by its
    true class's inverse-frequency weight w_y (the weights of the CE loss) and
    the sum is divided by the summed weights of the terms instead, so that
    without weights (all 1) it is the published loss."""

    class_weighted: bool = False

    def head_size(self, k: int) -> int:
        return k - 1

    def phase1_loss(self, logits, grades, weights):
        losses = []
        for t, (lt, wt) in enumerate(zip(logits, weights)):
            y = grades[:, t]
            keep = y >= 0
            lt, y = lt[keep].float(), y[keep]
            levels = torch.arange(lt.shape[1], device=lt.device)
            in_subset = (y[:, None] >= levels).float()  # (N, K-1): sample i conditions on y >= k
            target = (y[:, None] > levels).float()
            terms = F.binary_cross_entropy_with_logits(lt, target, reduction="none")
            w = in_subset * (wt[y][:, None].float() if self.class_weighted else 1.0)
            if w.sum() > 0:
                losses.append((w * terms).sum() / w.sum())
        return _task_mean(losses, logits)

    @staticmethod
    def cumulative(logits_t: torch.Tensor) -> torch.Tensor:
        """(N, K-1): P(y > k) = prod_{j <= k} sigmoid(logit_j), summed in log space."""
        return torch.exp(torch.cumsum(F.logsigmoid(logits_t.float()), dim=1))

    def class_probs(self, logits_t):
        cum = self.cumulative(logits_t)
        ones = torch.ones_like(cum[:, :1])
        # p_k = P(y > k-1) - P(y > k), with P(y > -1) = 1 and P(y > K-1) = 0.
        upper = torch.cat([ones, cum], dim=1)
        lower = torch.cat([cum, torch.zeros_like(ones)], dim=1)
        return upper - lower

    def grade_from_probs(self, probs_t):
        # P(y > k) = sum_{j > k} p_j recovers the cumulative probabilities (also of
        # probabilities averaged over TTA views); the grade counts those above 0.5.
        above = probs_t.flip(1).cumsum(1).flip(1)[:, 1:]
        return (above > 0.5).sum(dim=1)


@dataclasses.dataclass(frozen=True)
class MeanAbsoluteError(Method):
    """MAE_l: |E[grade] - y| with E[grade] = sum_k k * softmax(logits)_k, each
    labelled sample weighted by its true class's inverse-frequency weight w_y.
    ``normalize="discs"`` (default, the published code) divides the weighted sum
    by the number of labelled samples; ``"weights"`` divides it by the summed
    weights (as weighted CE does). Grade: E[grade] rounded half up, clipped to
    0..K-1."""

    normalize: str = "discs"

    def __post_init__(self):
        if self.normalize not in ("discs", "weights"):
            raise ValueError(f"method 'mae': normalize must be 'discs' or 'weights', got {self.normalize!r}")

    def phase1_loss(self, logits, grades, weights):
        losses = []
        for t, (lt, wt) in enumerate(zip(logits, weights)):
            y = grades[:, t]
            keep = y >= 0
            y = y[keep]
            w = wt[y].float()
            if y.numel() and w.sum() > 0:
                error = (self.expected_grade(self.class_probs(lt[keep])) - y).abs()
                losses.append((w * error).sum() / (y.numel() if self.normalize == "discs" else w.sum()))
        return _task_mean(losses, logits)

    @staticmethod
    def expected_grade(probs_t: torch.Tensor) -> torch.Tensor:
        return probs_t @ torch.arange(probs_t.shape[1], dtype=probs_t.dtype, device=probs_t.device)

    def grade_from_probs(self, probs_t):
        k = probs_t.shape[1]
        return torch.floor(self.expected_grade(probs_t) + 0.5).clamp(0, k - 1).long()


#: name -> (method, one-line description), in registration order: the single
#: source of the method names (see the module docstring).
_REGISTRY: dict[str, tuple[Method, str]] = {}


def register(method: Method, description: str) -> Method:
    """Adds ``method`` under ``method.name`` (after those registered before it) with
    ``description``, one line for ``spinerank train --help``; returns it.
    ``method.ranking`` makes it a ranking method (phase 2, score thresholds)."""
    if not isinstance(method, Method):
        raise TypeError(f"register: a Method instance, got {method!r}")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", method.name or ""):
        raise ValueError(f"register: a method's name is lowercase letters, digits, '-' and '_' (a CLI choice "
                         f"and a folder name), got {method.name!r}")
    if method.name in _REGISTRY:
        raise ValueError(f"register: method {method.name!r} is registered already")
    if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
        raise ValueError(f"register: method {method.name!r} needs a one-line description, got {description!r}")
    _REGISTRY[method.name] = (method, description.strip())
    return method


def unregister(name: str) -> None:
    """Removes the method called ``name`` (e.g. one a test registered)."""
    if name not in _REGISTRY:
        raise ValueError(f"unregister: no method {name!r} is registered")
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """The registered methods' names, in registration order."""
    return tuple(_REGISTRY)


def ranking_names() -> tuple[str, ...]:
    """The registered ranking methods' names (those with a phase 2), in order."""
    return tuple(name for name, (method, _) in _REGISTRY.items() if method.ranking)


def description(name: str) -> str:
    """The one-line description ``name`` was registered with."""
    get(name)  # the unknown-method error
    return _REGISTRY[name][1]


def spoken(items) -> str:
    """``a, b or c``: names in a sentence (error messages, help)."""
    items = list(items)
    return " or ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else "".join(items)


def __getattr__(attr):
    # METHOD_NAMES: the registered names (names()), read when asked, so that it
    # includes methods registered after this module was imported.
    if attr == "METHOD_NAMES":
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


#: PairwiseRankLoss options a ranking method's ``method_options`` may set, e.g.
#: DeepRankSVM with the similarity term of the paper's text:
#: ``{"lambda_sim": 0.25, "pair_normalization": "per_kind"}``.
RANK_OPTION_NAMES = ("margin_base", "margin_scale", "lambda_dis", "lambda_sim", "severity_weight", "pair_fn",
                     "sigma", "pair_normalization")


def get(name: str, **options) -> Method:
    """The method called ``name``; ``options`` set its fields (``class_weighted``
    for corn)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(names())}")
    method = _REGISTRY[name][0]
    fields = {f.name for f in dataclasses.fields(method)} - {"name", "ranking", "rank_options"}
    allowed = fields | (set(RANK_OPTION_NAMES) if method.ranking else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"method {name!r} has no option(s) {', '.join(unknown)}"
                         + (f"; its options: {', '.join(sorted(allowed))}" if allowed else ""))
    rank = {k: v for k, v in options.items() if k in RANK_OPTION_NAMES and k not in fields}
    if rank:
        from spinerank_ext import loss as loss_lib

        merged = {**dict(method.rank_options), **rank}
        options_checked = loss_lib.LossOptions(**merged)  # ValueError naming a bad option
        try:  # and the numbers must be numbers
            options_checked.op_args  # noqa: B018 (computing it checks the numbers)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"method {name!r}: options {rank}: {exc}") from None
        method = dataclasses.replace(method, rank_options=tuple(merged.items()))
    return dataclasses.replace(method, **{k: v for k, v in options.items() if k in fields})


def for_config(config) -> Method:
    """The method of a TrainConfig, with its options (``method_options``; for
    corn also ``corn_class_weights``)."""
    options = dict(config.method_options or {})
    if config.method == "corn" and config.corn_class_weights:
        options["class_weighted"] = True
    return get(config.method, **options)


# -- the methods (SPEC §7), in the order of names(), the CLI and the tables --------

register(Method("ce"), "inverse-frequency weighted cross-entropy; grade = argmax")
register(Corn("corn"), "CORN (Shi et al. 2021): K-1 conditional binary logits per task "
                       "(--corn-class-weights: weighted by grade)")
register(MeanAbsoluteError("mae"), "MAE_l: |E[grade] - y| over the softmax, class-weighted; grade = E[grade] "
                                   "rounded")
# SPEC §3: the same op family, other options; RankNet and DeepRankSVM as the
# published code defines them (see RANK_OPTION_NAMES to change them).
register(Method("ranknet", ranking=True, rank_options=(
    ("pair_fn", "logistic"), ("sigma", 2.0), ("lambda_sim", 0.0), ("pair_normalization", "all"))),
    "RankNet as published: softplus(-2 r delta) over all kept pairs, no similarity term")
register(Method("deeprank", ranking=True, rank_options=(
    ("pair_fn", "squared_hinge"), ("margin_base", 2.0), ("margin_scale", 0.0), ("lambda_sim", 0.0),
    ("pair_normalization", "all"))),
    "DeepRankSVM as published: max(0, 2 - r delta)^2 over all kept pairs, no similarity term")
register(Method("spinerank", ranking=True), "SpineRankNet: PairwiseRankLoss with the SPEC §3 defaults")
