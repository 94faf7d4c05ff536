"""SpineRankNet (SPEC §6): a 3D ResNet-18 encoder that never downsamples depth,
one linear classification head per task, and ranking heads that turn each
task's logits (or the embedding) into a severity score in [0, S].

Ranking head variants (``rank_head``, the paper's head ablation), all ending in
``soft_clamp`` to [0, S]:

- ``mlp`` (default, the paper's): Linear(in, 64) -> ReLU -> Dropout -> Linear(64, 1), per task;
- ``linear``: Linear(in, 1), per task;
- ``kan``: a small Kolmogorov-Arnold network per task, two layers (in -> 64 -> 32)
  that each expand every (layer-normalised) input into Gaussian radial basis
  functions on a fixed grid and mix them linearly, then Dropout -> Linear(32, 1);
- ``transformer``: one token per task (that task's input projected to 32
  dimensions plus a learnt task embedding), one self-attention layer across the
  T tokens, then one Linear(32, 1) per task.
"""
from __future__ import annotations

import torch
from torch import nn

from spinerank_ext import soft_clamp

from . import methods
from .config import RANK_HEADS


class BasicBlock3d(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: tuple[int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels)
        self.shortcut = nn.Identity()
        if stride != (1, 1, 1) or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv3d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm3d(channels))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Encoder3d(nn.Module):
    """ResNet-18 in 3D; strides (1, 2, 2) keep the few sagittal slices. ``width``
    is the first stage's channel count (64 in the paper). ``downsample_stage2``
    False keeps stage 2 at stride 1 (as the published code does): only stages 3
    and 4 halve the in-plane size."""

    def __init__(self, width: int = 64, downsample_stage2: bool = True):
        super().__init__()
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv3d(1, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        stages, in_channels = [], width
        for i, c in enumerate(channels):
            stride = (1, 1, 1) if i == 0 or (i == 1 and not downsample_stage2) else (1, 2, 2)
            stages.append(nn.Sequential(BasicBlock3d(in_channels, c, stride), BasicBlock3d(c, c, (1, 1, 1))))
            in_channels = c
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_channels

    def forward(self, x):
        x = self.stages(self.stem(x))
        return x.mean(dim=(2, 3, 4))


class _TaskScoreHead(nn.Module):
    """One task's ranking head: ``raw`` maps its input to (B, 1), soft_clamp to [0, scale]."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def raw(self, x):
        raise NotImplementedError

    def forward(self, x):
        return soft_clamp(self.raw(x)[:, 0], scale=self.scale)


class RankHead(_TaskScoreHead):
    """The paper's ranking head: Linear(in, 64) -> ReLU -> Dropout -> Linear(64, 1) -> soft_clamp."""

    def __init__(self, in_features: int, dropout: float, scale: float):
        super().__init__(scale)
        self.mlp = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(64, 1))

    def raw(self, x):
        return self.mlp(x)


class LinearRankHead(_TaskScoreHead):
    """A linear projection of the input to one score: Linear(in, 1) -> soft_clamp."""

    def __init__(self, in_features: int, scale: float):
        super().__init__(scale)
        self.linear = nn.Linear(in_features, 1)

    def raw(self, x):
        return self.linear(x)


class GaussianBasisLayer(nn.Module):
    """One Kolmogorov-Arnold layer: each input, layer-normalised, is expanded into
    G Gaussian bumps exp(-((x - g_j) / h)^2) centred on a fixed grid g over
    [grid_min, grid_max] (h: the grid spacing); a bias-free linear map of the
    in * G basis values gives the outputs. Each output is thus a sum of learnt
    one-dimensional functions of the inputs, one per (input, output) pair."""

    def __init__(self, in_features: int, out_features: int, grid: int = 8, grid_min: float = -2.0,
                 grid_max: float = 2.0):
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.register_buffer("grid", torch.linspace(grid_min, grid_max, grid), persistent=False)
        self.inv_width = (grid - 1) / (grid_max - grid_min)
        self.linear = nn.Linear(in_features * grid, out_features, bias=False)

    def forward(self, x):
        basis = torch.exp(-(((self.norm(x)[..., None] - self.grid) * self.inv_width) ** 2))  # (B, in, G)
        return self.linear(basis.flatten(1))


class KanRankHead(_TaskScoreHead):
    """Two Gaussian-basis KAN layers (in -> 64 -> 32) -> Dropout -> Linear(32, 1) -> soft_clamp."""

    def __init__(self, in_features: int, dropout: float, scale: float, hidden: int = 64, grid: int = 8):
        super().__init__(scale)
        self.kan = nn.Sequential(GaussianBasisLayer(in_features, hidden, grid),
                                 GaussianBasisLayer(hidden, hidden // 2, grid))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden // 2, 1)

    def raw(self, x):
        return self.out(self.dropout(self.kan(x)))


class CrossTaskTransformerHead(nn.Module):
    """Scores of all tasks at once: task t's input becomes one token (its own
    Linear(in_t, d) plus a learnt task embedding); one transformer encoder layer
    (self-attention across the T tokens, d = 32, 2 heads, feed-forward 64) lets
    every task see the others; token t -> Linear(d, 1) -> soft_clamp is task t's score."""

    def __init__(self, in_features: list[int], dropout: float, scale: float, d_model: int = 32, heads: int = 2):
        super().__init__()
        self.inputs = nn.ModuleList(nn.Linear(k, d_model) for k in in_features)
        self.task_embedding = nn.Parameter(torch.randn(len(in_features), d_model) * 0.02)
        self.attention = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=dropout,
                                                    batch_first=True)
        self.outputs = nn.ModuleList(nn.Linear(d_model, 1) for _ in in_features)
        self.scale = scale

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([proj(x) for proj, x in zip(self.inputs, inputs)], dim=1) + self.task_embedding
        tokens = self.attention(tokens)  # (B, T, d)
        raw = torch.cat([out(tokens[:, t]) for t, out in enumerate(self.outputs)], dim=1)
        return soft_clamp(raw, scale=self.scale)


def build_rank_heads(kind: str, in_features: list[int], dropout: float, scale: float) -> nn.Module:
    """The ranking heads of every task: a ModuleList of per-task heads (mlp,
    linear, kan) or one CrossTaskTransformerHead."""
    if kind == "mlp":
        return nn.ModuleList(RankHead(k, dropout, scale) for k in in_features)
    if kind == "linear":
        return nn.ModuleList(LinearRankHead(k, scale) for k in in_features)
    if kind == "kan":
        return nn.ModuleList(KanRankHead(k, dropout, scale) for k in in_features)
    if kind == "transformer":
        return CrossTaskTransformerHead(in_features, dropout, scale)
    raise ValueError(f"rank_head must be one of {', '.join(RANK_HEADS)}, got {kind!r}")


class SpineRankNet(nn.Module):
    """Returns ``{"logits": [(B, head size)] per task, "scores": (B, T), "embedding": (B, C)}``;
    the head size is K_t (K_t - 1 for CORN, see ``methods``)."""

    def __init__(self, num_grades: list[int], width: int = 64, rank_on: str = "logits",
                 dropout: float = 0.3, scale: float = 10.0, head_sizes: list[int] | None = None,
                 rank_head: str = "mlp", downsample_stage2: bool = True):
        super().__init__()
        if rank_on not in ("logits", "embedding"):
            raise ValueError(f"rank_on must be 'logits' or 'embedding', got {rank_on!r}")
        self.encoder = Encoder3d(width, downsample_stage2=downsample_stage2)
        z = self.encoder.out_channels
        self.rank_on = rank_on
        # A method's classification head may not output K logits (CORN: K - 1).
        head_sizes = list(num_grades) if head_sizes is None else list(head_sizes)
        self.cls_heads = nn.ModuleList(nn.Linear(z, k) for k in head_sizes)
        self.rank_head = rank_head
        self.rank_heads = build_rank_heads(rank_head, [k if rank_on == "logits" else z for k in head_sizes],
                                           dropout, scale)

    def forward(self, x):
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"SpineRankNet takes (B, 1, D, H, W) volumes, got shape {tuple(x.shape)}")
        z = self.encoder(x)
        logits = [head(z) for head in self.cls_heads]
        inputs = logits if self.rank_on == "logits" else [z] * len(logits)
        if isinstance(self.rank_heads, nn.ModuleList):
            scores = torch.stack([head(i) for head, i in zip(self.rank_heads, inputs)], dim=1)
        else:
            scores = self.rank_heads(inputs)
        return {"logits": logits, "scores": scores, "embedding": z}

    def rank_parameters(self):
        return self.rank_heads.parameters()


def build_model(config, num_grades: list[int]) -> SpineRankNet:
    method = methods.get(config.method)
    return SpineRankNet(num_grades, width=config.width, rank_on=config.rank_on, dropout=config.dropout,
                        scale=config.score_scale, head_sizes=[method.head_size(k) for k in num_grades],
                        rank_head=config.rank_head, downsample_stage2=config.downsample_stage2)
