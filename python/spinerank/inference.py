"""A trained model applied to volumes: scores, class probabilities and the TTA spread.

With TTA every volume is scored on the views of ``spinerank_ext.tta_views``
(54 by default) and the views are merged by ``tta_merge``, which swaps the
left/right tasks on flipped views; without it the model sees the centre crop.
Every method yields a continuous score per task: the ranking head's for the
ranking methods, the expected grade on the score scale, E[k] S / (K - 1), for the
classifiers, so that all of them can be ranked, plotted and compared alike.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch
from .progress import progress_bar

import spinerank_ext

from . import config as config_lib
from . import methods
from .augmentation import centre_crop
from .checkpoint import load_checkpoint
from .metrics import score_probabilities
from .model import build_model
from .tasks import TaskTable

#: Voxels of test-time views scored per model call batch (about 256 MB of float32).
TTA_CHUNK_VOXELS = 64 * 2**20


@dataclasses.dataclass
class Predictions:
    """Per volume and task: the score (N, T), its TTA standard deviation (N, T;
    0 without TTA), and the class probabilities (one (N, K_t) array per task)."""

    scores: np.ndarray
    std: np.ndarray
    probs: list[np.ndarray]

    @staticmethod
    def concatenate(parts: list["Predictions"]) -> "Predictions":
        return Predictions(np.concatenate([p.scores for p in parts]), np.concatenate([p.std for p in parts]),
                           [np.concatenate([p.probs[t] for p in parts]) for t in range(len(parts[0].probs))])


class Predictor:
    """The model of a checkpoint (``best.pt``) in eval mode, with its config and method."""

    def __init__(self, checkpoint: str | pathlib.Path, device: str = "cpu", view_batch: int = 32):
        path = pathlib.Path(checkpoint)
        if path.is_dir():
            path = path / "best.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: train a model first (spinerank train)")
        state = load_checkpoint(path)
        self.checkpoint = path
        self.config = config_lib.TrainConfig(**state["config"])
        self.tasks = TaskTable.from_config(state["tasks"])
        self.method = methods.for_config(self.config)
        self.device = torch.device(device)
        self.model = build_model(self.config, self.tasks.num_grades)
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        self.view_batch = view_batch
        c = self.config
        self.tta_grid = dict(shifts_h=tuple(c.tta_shifts_h), shifts_w=tuple(c.tta_shifts_w),
                             shifts_d=tuple(c.tta_shifts_d))
        self.view_flipped = spinerank_ext.tta_view_flipped(**self.tta_grid)

    @property
    def scale(self) -> float:
        return float(self.config.score_scale)

    def _forward(self, crops: torch.Tensor):
        """Scores (M, T) and per-task probabilities [(M, K_t)] of a batch of crops."""
        scores, probs = [], []
        for start in range(0, crops.shape[0], self.view_batch):
            out = self.model(crops[start:start + self.view_batch].to(self.device))
            p = [self.method.class_probs(lt.float()) for lt in out["logits"]]
            if self.method.ranking:
                s = out["scores"].float()
            else:
                s = torch.stack([pt @ torch.arange(pt.shape[1], dtype=pt.dtype, device=pt.device)
                                 * (self.scale / (pt.shape[1] - 1)) for pt in p], 1)
            scores.append(s.cpu())
            probs.append([pt.cpu() for pt in p])
        return torch.cat(scores), [torch.cat([p[t] for p in probs]) for t in range(len(self.tasks))]

    @torch.no_grad()
    def __call__(self, volumes: torch.Tensor, tta: bool) -> Predictions:
        """Predictions for (N, 1, D, H, W) volumes fitted to the config's volume_shape."""
        if not tta:
            scores, probs = self._forward(centre_crop(volumes, tuple(self.config.input_shape)))
            std = torch.zeros_like(scores)
        else:
            # Views of a few volumes at a time: 54 paper-sized views of one volume take 85 MB.
            voxels = int(np.prod(self.config.input_shape)) * self.view_flipped.numel()
            step = max(1, TTA_CHUNK_VOXELS // voxels)
            parts = [self._tta(volumes[i:i + step]) for i in range(0, volumes.shape[0], step)]
            scores, std = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            probs = [torch.cat([p[2][t] for p in parts]) for t in range(len(self.tasks))]
        scores = scores.double().numpy()
        if self.method.ranking:  # SPEC §9: a score's class probabilities, p_k ∝ exp(-|s - c_k|)
            probs = [score_probabilities(scores[:, t], k, self.scale) for t, k in enumerate(self.tasks.num_grades)]
        else:
            probs = [p.double().numpy() for p in probs]
        return Predictions(scores, std.double().numpy(), probs)

    def _tta(self, volumes: torch.Tensor):
        n = volumes.shape[0]
        views = spinerank_ext.tta_views(volumes, tuple(self.config.input_shape), **self.tta_grid)  # (N, V, 1, d, h, w)
        scores, probs = self._forward(views.flatten(0, 1))
        V = views.shape[1]
        swap = tuple(self.tasks.swap_pairs)
        mean, std = spinerank_ext.tta_merge(scores.view(n, V, -1), self.view_flipped, swap=swap)
        merged, _ = spinerank_ext.tta_merge([p.view(n, V, -1) for p in probs], self.view_flipped, swap=swap)
        return mean, std, merged

    def grades(self, predictions: Predictions, thresholds: list[np.ndarray] | None) -> np.ndarray:
        """(N, T) grades: the calibrated thresholds on the scores for the ranking
        methods, the classifier's own rule on the (merged) probabilities otherwise."""
        from .metrics import grades_from_scores

        columns = []
        for t in range(len(self.tasks)):
            if self.method.ranking:
                if thresholds is None:
                    raise ValueError("a ranking model needs thresholds: run spinerank calibrate first")
                columns.append(grades_from_scores(predictions.scores[:, t], thresholds[t]))
            else:
                columns.append(self.method.grade_from_probs(torch.from_numpy(predictions.probs[t])).numpy())
        return np.stack(columns, 1).astype(np.int64)

    def predict_dataset(self, dataset, tta: bool, batch_size: int = 16, progress: bool = True,
                        desc: str = "predicting") -> tuple[Predictions, np.ndarray]:
        """Predictions and true grades (N, T) for a DiscDataset in eval mode."""
        from .data import loader

        parts, grades = [], []
        for volumes, y in progress_bar(loader(dataset, batch_size, device=self.device), desc=desc, leave=False,
                               disable=not progress):
            parts.append(self(volumes, tta))
            grades.append(y.numpy())
        return Predictions.concatenate(parts), np.concatenate(grades)
