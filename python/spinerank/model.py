"""SpineRankNet (SPEC §6): a 3D ResNet-18 encoder that never downsamples depth,
one linear classification head per task, and one ranking head per task that
turns that task's logits (or the embedding) into a severity score in [0, S]."""
from __future__ import annotations

import torch
from torch import nn

from spinerank_ext import soft_clamp

from . import methods


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
    is the first stage's channel count (64 in the paper)."""

    def __init__(self, width: int = 64):
        super().__init__()
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv3d(1, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        stages, in_channels = [], width
        for i, c in enumerate(channels):
            stride = (1, 1, 1) if i == 0 else (1, 2, 2)
            stages.append(nn.Sequential(BasicBlock3d(in_channels, c, stride), BasicBlock3d(c, c, (1, 1, 1))))
            in_channels = c
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_channels

    def forward(self, x):
        x = self.stages(self.stem(x))
        return x.mean(dim=(2, 3, 4))


class RankHead(nn.Module):
    def __init__(self, in_features: int, dropout: float, scale: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(64, 1))
        self.scale = scale

    def forward(self, x):
        return soft_clamp(self.mlp(x)[:, 0], scale=self.scale)


class SpineRankNet(nn.Module):
    """Returns ``{"logits": [(B, head size)] per task, "scores": (B, T), "embedding": (B, C)}``;
    the head size is K_t (K_t - 1 for CORN, see ``methods``)."""

    def __init__(self, num_grades: list[int], width: int = 64, rank_on: str = "logits",
                 dropout: float = 0.3, scale: float = 10.0, head_sizes: list[int] | None = None):
        super().__init__()
        if rank_on not in ("logits", "embedding"):
            raise ValueError(f"rank_on must be 'logits' or 'embedding', got {rank_on!r}")
        self.encoder = Encoder3d(width)
        z = self.encoder.out_channels
        self.rank_on = rank_on
        # A method's classification head may not output K logits (CORN: K - 1).
        head_sizes = list(num_grades) if head_sizes is None else list(head_sizes)
        self.cls_heads = nn.ModuleList(nn.Linear(z, k) for k in head_sizes)
        self.rank_heads = nn.ModuleList(RankHead(k if rank_on == "logits" else z, dropout, scale)
                                        for k in head_sizes)

    def forward(self, x):
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"SpineRankNet takes (B, 1, D, H, W) volumes, got shape {tuple(x.shape)}")
        z = self.encoder(x)
        logits = [head(z) for head in self.cls_heads]
        inputs = logits if self.rank_on == "logits" else [z] * len(logits)
        scores = torch.stack([head(i) for head, i in zip(self.rank_heads, inputs)], dim=1)
        return {"logits": logits, "scores": scores, "embedding": z}

    def rank_parameters(self):
        return self.rank_heads.parameters()

    def encoder_parameters(self):
        """Everything upstream of the ranking heads: the encoder and the
        classification heads (the ranking heads read the logits)."""
        return [*self.encoder.parameters(), *self.cls_heads.parameters()]


def build_model(config, num_grades: list[int]) -> SpineRankNet:
    method = methods.get(config.method)
    return SpineRankNet(num_grades, width=config.width, rank_on=config.rank_on, dropout=config.dropout,
                        scale=config.score_scale, head_sizes=[method.head_size(k) for k in num_grades])
