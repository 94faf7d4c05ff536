"""Two-phase training (SPEC §7).

Phase 1 trains the encoder and the classification heads with the method's loss
(inverse-frequency weighted cross-entropy; CORN or MAE_l for those baselines,
see ``methods``) and keeps the epoch of best mean validation balanced accuracy
of the heads' grades. Only the ranking methods have a phase 2: it starts from
that model (or from another run's, ``init_phase1``: its encoder and
classification heads) and trains the ranking heads with the fused pairwise
ranking loss (lr 1e-3) while the encoder and classification heads fine-tune
(lr 1e-4), keeping the epoch of best mean validation QWK (``phase2_selection``:
or balanced accuracy) with the fixed thresholds (c + 0.5) * S / (K - 1).
With ``rank_anchor`` > 0 phase 2 adds that weight times an anchor term pulling
each labelled score toward its grade's centre y * S / (K - 1)
(``methods.grade_anchor_loss``).
AdamW with a cosine schedule to ``eta_min`` in both phases; the learning rates
of each parameter group are settings (config.py; the ``official`` preset sets
the published code's).

Run folder: ``config.json`` (resolved, paths absolute), ``dataset.json`` (the
dataset's folder and fingerprints, see ``provenance``), ``metrics.jsonl`` (one line per epoch),
``last.pt`` (everything needed to resume: model, optimizer, scheduler,
early-stopping state, RNG, history), ``best_phase1.pt`` and ``best.pt`` (the
selected model). Every file is written atomically; an interrupted run resumes
from ``last.pt`` and ends as an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import sys
import time

import numpy as np
import torch
from .progress import progress_bar, summaries

import spinerank_ext

from . import config as config_lib
from . import distributed, methods, provenance
from .augmentation import TrainAugment, centre_crop, swap_flipped
from .checkpoint import atomic_write, atomic_write_text, json_safe, load_checkpoint, save_checkpoint
from .data import (DiscDataset, EpochSampler, class_weights, default_num_workers, load_or_make_splits, loader,
                   preflight, read_labels, split_rows, volume_cache)
from .methods import weighted_cross_entropy  # noqa: F401 (its home before methods.py)
from .metrics import balanced_accuracy, fixed_thresholds, grades_from_scores, quadratic_weighted_kappa
from .model import build_model

CHECKPOINT_VERSION = 1


def _seed(*parts: int) -> int:
    """A 63-bit seed from several ints (run seed, phase, epoch, stream)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclasses.dataclass
class PhaseState:
    phase: int = 1
    epoch: int = 0  # epochs completed in this phase
    best_metric: float = -math.inf
    best_epoch: int = -1
    since_best: int = 0
    done: bool = False


class Trainer:
    def __init__(self, config: config_lib.TrainConfig):
        config.validate()
        self.dist = distributed.context()  # rank 0 of 1 unless run under torchrun
        config = self.dist.local_config(config)
        self.config = config
        self.out = pathlib.Path(config.out)
        self.tasks = config.task_table
        self.device = self.dist.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        rows = read_labels(config.data, self.tasks)
        splits = load_or_make_splits(config.data, rows, config.split_seed)
        self.dataset_record = provenance.fingerprint(config.data, rows, splits)
        crop = self.dataset_record["crop"]
        if crop and self.dist.is_main and list(crop.get("shape_hwd", [])) != [*config.volume_shape[1:],
                                                                              config.volume_shape[0]]:
            h, w, d = crop.get("shape_hwd", ["?"] * 3)
            print(f"spinerank: warning: the dataset's crops are (H, W, D) ({h}, {w}, {d}) but volume_shape (D, H, W) "
                  f"is {tuple(config.volume_shape)}: every crop is centre-cropped or zero-padded to it, which "
                  "changes its field of view; import with --shape to match", file=sys.stderr)
        self.rows = split_rows(rows, splits)
        progress = config.progress and self.dist.is_main
        # Every volume decoded once (volume_cache.py), then every volume training will read checked: a bad one
        # stops the run before the first epoch.
        self.cache = volume_cache(config.data, rows, config.volume_shape, progress=progress)
        preflight(config.data, self.rows["train"] + self.rows["val"], progress=progress, cache=self.cache)
        self.train_set = DiscDataset(config.data, self.rows["train"], self.tasks, config.volume_shape,
                                     mode="train", seed=config.seed, cache=self.cache)
        self.val_set = DiscDataset(config.data, self.rows["val"], self.tasks, config.volume_shape, mode="eval",
                                   cache=self.cache)
        self.num_workers = default_num_workers() if config.num_workers is None else config.num_workers
        self.train_sampler = EpochSampler()
        self.train_loaders: dict[bool, torch.utils.data.DataLoader] = {}  # by drop_last: one per phase's setting
        self.weights = [w.to(self.device) for w in class_weights(self.rows["train"], self.tasks)]
        torch.manual_seed(_seed(config.seed, 0))
        self.method = methods.for_config(config)
        self.model = build_model(config, self.tasks.num_grades).to(self.device)
        self.augment = TrainAugment(config)
        self.swap = torch.tensor(self.tasks.swap_permutation(), device=self.device)
        self.rank_loss = spinerank_ext.PairwiseRankLoss(
            self.tasks.num_grades, scale=config.score_scale, max_pairs=config.max_pairs,
            hard_fraction=config.hard_fraction, generator=config.seed, global_pairs=config.global_pairs,
            **self.method.loss_options()).to(self.device)
        self.num_grades = torch.tensor(self.tasks.num_grades, dtype=torch.float32, device=self.device)
        self.history: list[dict] = []
        # Data parallel (a no-op in one process): the step calls train_model, a DDP
        # wrapper sharing self.model's parameters.
        self.train_model = self.dist.wrap_model(self.model, config, self.device)

    # -- optimisation ---------------------------------------------------------

    def _optimizer(self, phase: int):
        c = self.config
        encoder, cls_heads = list(self.model.encoder.parameters()), list(self.model.cls_heads.parameters())
        if phase == 1:
            if c.lr_encoder_phase1 is None:  # one group, as before the setting existed (same optimizer state)
                groups = [{"params": encoder + cls_heads, "lr": c.lr_phase1}]
            else:
                groups = [{"params": encoder, "lr": c.lr_encoder_phase1}, {"params": cls_heads, "lr": c.lr_phase1}]
            epochs = c.epochs_phase1
        else:
            if c.lr_cls_heads_phase2 is None:
                groups = [{"params": encoder + cls_heads, "lr": c.lr_encoder_phase2}]
            else:
                groups = [{"params": encoder, "lr": c.lr_encoder_phase2},
                          {"params": cls_heads, "lr": c.lr_cls_heads_phase2}]
            groups.append({"params": list(self.model.rank_parameters()), "lr": c.lr_heads_phase2})
            epochs = c.epochs_phase2
        optimizer = torch.optim.AdamW(groups, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=c.eta_min)
        return optimizer, scheduler

    def _loss(self, phase: int, out: dict, grades: torch.Tensor):
        if phase == 1:
            return self.method.phase1_loss(out["logits"], grades, self.weights)
        scores = out["scores"].float()  # float32 also under AMP
        loss = self.rank_loss(scores, grades)
        if self.config.rank_anchor:  # 0: the pairwise loss alone, as before the setting existed
            # This rank's own discs (the pairwise loss pairs the global batch with global_pairs); DDP's
            # gradient averaging makes it the mean over the ranks of their batches' anchor terms.
            loss = loss + self.config.rank_anchor * methods.grade_anchor_loss(
                scores, grades, self.num_grades, self.config.score_scale)
        return loss

    def _train_epoch(self, phase: int, epoch: int, optimizer) -> float:
        c = self.config
        self.model.train()
        self.train_set.set_epoch(epoch + 1000 * phase)
        sampler = self.dist.sampler(self.train_set, _seed(c.seed, phase, epoch, 1))
        # drop_last only where a complete batch remains: an epoch always trains.
        drop_last = c.drop_last and len(sampler) >= c.batch_size
        self.train_sampler.set_epoch(epoch + 1000 * phase, sampler)
        if drop_last not in self.train_loaders:  # one loader (and its workers) for every epoch
            self.train_loaders[drop_last] = loader(self.train_set, c.batch_size, sampler=self.train_sampler,
                                                   drop_last=drop_last, num_workers=self.num_workers,
                                                   device=self.device)
        batches = self.train_loaders[drop_last]
        rank = self.dist.seed_parts()
        aug_generator = torch.Generator().manual_seed(_seed(c.seed, phase, epoch, 2, *rank))
        # The DataLoader draws its workers' base seed from the global generator when an iteration starts:
        # started before the dropout seed is set, the training does not depend on how often that happens.
        epoch_batches = iter(batches)
        torch.manual_seed(_seed(c.seed, phase, epoch, 3, *rank))  # dropout
        # The loss is summed on the device: reading it every batch would wait for the GPU.
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        bar = progress_bar(epoch_batches, total=len(epoch_batches), desc=f"phase {phase} epoch {epoch + 1}",
                           leave=False, disable=not c.progress)
        for step, (volumes, grades) in enumerate(bar):
            volumes = volumes.to(self.device, non_blocking=True)
            grades = grades.to(self.device, non_blocking=True)
            volumes, flipped = self.augment(volumes, aug_generator)
            # A left-right flip turns the left foramen into the right one.
            grades = swap_flipped(grades, flipped, self.swap)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=c.amp and self.device.type == "cuda"):
                out = self.train_model(volumes)
            loss = self._loss(phase, out, grades)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * volumes.shape[0]
            count += volumes.shape[0]
            if c.progress and step % 10 == 0:
                bar.set_postfix(loss=f"{total.item() / count:.4f}")
        return total.item() / max(count, 1)

    @torch.no_grad()
    def evaluate(self, dataset) -> dict:
        """Per-task balanced accuracy and QWK of the classification heads' grades
        (the method's read-out) and, for ranking methods, QWK and balanced
        accuracy of the scores with the fixed thresholds, on a dataset in eval mode."""
        c = self.config
        self.model.eval()
        batches = loader(dataset, c.batch_size, device=self.device)
        preds, scores, grades = [], [], []
        for volumes, y in progress_bar(batches, desc="validation", leave=False, disable=not c.progress):
            out = self.model(centre_crop(volumes.to(self.device, non_blocking=True), c.input_shape))
            m = self.method
            preds.append(torch.stack([m.grade_from_probs(m.class_probs(lt)) for lt in out["logits"]], 1).cpu())
            scores.append(out["scores"].float().cpu())
            grades.append(y)
        preds, scores, grades = torch.cat(preds).numpy(), torch.cat(scores).numpy(), torch.cat(grades).numpy()
        ba, class_qwk, qwk, score_ba = [], [], [], []
        for t, k in enumerate(self.tasks.num_grades):
            keep = grades[:, t] >= 0
            ba.append(balanced_accuracy(grades[keep, t], preds[keep, t]))
            class_qwk.append(quadratic_weighted_kappa(grades[keep, t], preds[keep, t], k))
            fixed = grades_from_scores(scores[keep, t], fixed_thresholds(k, c.score_scale))
            qwk.append(quadratic_weighted_kappa(grades[keep, t], fixed, k))
            score_ba.append(balanced_accuracy(grades[keep, t], fixed))
        result = {"balanced_accuracy": ba, "class_qwk": class_qwk, "mean_balanced_accuracy": float(np.nanmean(ba)),
                  "mean_class_qwk": float(np.nanmean(class_qwk))}
        if self.method.ranking:  # the other methods never train their ranking heads
            result.update(qwk=qwk, mean_qwk=float(np.nanmean(qwk)), score_balanced_accuracy=score_ba,
                          mean_score_balanced_accuracy=float(np.nanmean(score_ba)))
        return result

    def selection_metric(self, phase: int, val: dict) -> float:
        """Phase 1: mean validation BA of the classification heads; phase 2: mean
        validation QWK, or BA (``phase2_selection``), of the scores at the fixed thresholds."""
        if phase == 1:
            return val["mean_balanced_accuracy"]
        return val["mean_qwk"] if self.config.phase2_selection == "qwk" else val["mean_score_balanced_accuracy"]

    # -- checkpoints ----------------------------------------------------------

    def _state(self, phase: PhaseState, optimizer, scheduler) -> dict:
        return {"version": CHECKPOINT_VERSION, "config": self.config.to_dict(), "tasks": self.tasks.to_config(),
                "method": self.config.method, "phase": dataclasses.asdict(phase), "model": self.model.state_dict(),
                "optimizer": None if optimizer is None else optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "rank_loss": self.rank_loss.state_dict(), "rng": torch.get_rng_state(),
                "history": self.history}

    def _save_model(self, name: str, phase: PhaseState, metric: float) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.out / name, {"version": CHECKPOINT_VERSION, "config": self.config.to_dict(),
                                          "tasks": self.tasks.to_config(), "method": self.config.method,
                                          "model": self.model.state_dict(),
                                          "phase": phase.phase, "epoch": phase.epoch, "metric": metric})

    def _save_last(self, phase: PhaseState, optimizer, scheduler) -> None:
        """last.pt, by rank 0; the other ranks wait until it (and best*.pt) is written."""
        if self.dist.is_main:
            save_checkpoint(self.out / "last.pt", self._state(phase, optimizer, scheduler))
        self.dist.barrier()

    def _write_metrics(self) -> None:
        if not self.dist.is_main:
            return
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))

    # -- the run ----------------------------------------------------------------

    def run(self, resume: bool = False, interrupt_after: int | None = None) -> dict:
        """Trains both phases; returns the best validation metric of each.

        ``interrupt_after`` (tests): raise KeyboardInterrupt after that many
        epochs of this call, right after the checkpoint, as a kill would."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        state = PhaseState()
        optimizer = scheduler = None
        if resume:
            provenance.check(self.out, self.dataset_record)
            ckpt = load_checkpoint(last)
            self.model.load_state_dict(ckpt["model"])
            self.rank_loss.load_state_dict(ckpt["rank_loss"])
            state = PhaseState(**ckpt["phase"])
            self.history = ckpt["history"]
            torch.set_rng_state(ckpt["rng"])
            if ckpt["optimizer"] is not None:
                optimizer, scheduler = self._optimizer(state.phase)
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
        elif last.exists():
            raise FileExistsError(f"{self.out} already holds a run (last.pt): continue it with --resume, "
                                  "or choose another --out")
        elif c.init_phase1 is not None:
            state = self._init_phase1()
        if self.dist.is_main:
            config_lib.save(c, self.out / "config.json")
            provenance.write(self.out, self.dataset_record)
        self._write_metrics()
        if c.init_phase1 is not None and not resume:  # --resume works from the first epoch on
            self._save_last(state, None, None)
        epochs_run = 0
        while not state.done:
            max_epochs = c.epochs_phase1 if state.phase == 1 else c.epochs_phase2
            if optimizer is None:
                optimizer, scheduler = self._optimizer(state.phase)
            if state.epoch >= max_epochs or (state.epoch >= c.min_epochs and state.since_best >= c.patience):
                state, optimizer, scheduler = self._end_phase(state)
                self._save_last(state, optimizer, scheduler)
                continue
            started = time.perf_counter()
            train_loss = self.dist.mean(self._train_epoch(state.phase, state.epoch, optimizer))
            scheduler.step()
            # Rank 0 validates and every rank gets its result: the same early-stopping decisions.
            val = self.dist.on_main(self.evaluate, self.val_set)
            metric = self.selection_metric(state.phase, val)
            metric = -math.inf if math.isnan(metric) else metric
            state.epoch += 1
            if metric > state.best_metric:
                state.best_metric, state.best_epoch, state.since_best = metric, state.epoch, 0
                self._save_model("best_phase1.pt" if state.phase == 1 else "best.pt", state, metric)
            else:
                state.since_best += 1
            self.history.append(json_safe({
                "phase": state.phase, "epoch": state.epoch, "train_loss": train_loss, "selection_metric": metric,
                **val, "lr": [g["lr"] for g in optimizer.param_groups],
                "seconds": round(time.perf_counter() - started, 3)}))
            self._save_last(state, optimizer, scheduler)
            self._write_metrics()
            if summaries(c.progress):
                name = "balanced accuracy" if state.phase == 1 or c.phase2_selection != "qwk" else "QWK"
                print(f"phase {state.phase} epoch {state.epoch}/{max_epochs}: train loss {train_loss:.4f}, "
                      f"val mean {name} {metric:.3f} (best {state.best_metric:.3f} @ {state.best_epoch})",
                      flush=True)
            epochs_run += 1
            if interrupt_after is not None and epochs_run >= interrupt_after:
                raise KeyboardInterrupt
        return {f"phase{p}": max((h["selection_metric"] for h in self.history
                                  if h["phase"] == p and h["selection_metric"] is not None), default=None)
                for p in (1, 2)}

    def _init_phase1(self) -> PhaseState:
        """Starts phase 2 from another run's phase-1 checkpoint (``init_phase1``),
        copied as this run's best_phase1.pt once it is known to fit this model.
        Only its encoder and classification heads are loaded: phase 1 never trains
        the ranking heads, so the source's (of any ``rank_head``) are its untrained
        initial ones, and this run keeps its own (the same ones for the same
        variant and seed)."""
        source = pathlib.Path(self.config.init_phase1)
        ckpt = load_checkpoint(source)
        saved = ckpt.get("config") if isinstance(ckpt, dict) else None
        if saved is None or "model" not in ckpt or "tasks" not in ckpt:
            raise ValueError(f"init_phase1: {source} is not a spinerank model checkpoint")
        if ckpt.get("phase") != 1:
            raise ValueError(f"init_phase1: {source} holds a phase-{ckpt.get('phase')} model; give a phase-1 "
                             "checkpoint (best_phase1.pt, or best.pt of a ce run)")
        if ckpt["tasks"] != self.tasks.to_config():
            raise ValueError(f"init_phase1: the task table of {source} differs from this run's")
        c = self.config
        source_method = methods.get(saved.get("method", "spinerank"))
        heads = [source_method.head_size(k) for k in self.tasks.num_grades]
        if heads != [self.method.head_size(k) for k in self.tasks.num_grades]:
            raise ValueError(f"init_phase1: {source} was trained with method {source_method.name!r}, whose "
                             f"classification heads ({heads} outputs) do not fit method {c.method!r}")
        # Another encoder would not load; other data or splits would leak validation discs into training.
        defaults = {f.name: f.default for f in dataclasses.fields(config_lib.TrainConfig)}
        for name in ("width", "rank_on", "downsample_stage2", "input_shape", "split_seed", "data"):
            mine, theirs = getattr(c, name), saved.get(name, defaults[name])
            if name == "data":
                mine, theirs = pathlib.Path(mine).resolve(), pathlib.Path(theirs or "").resolve()
            elif isinstance(mine, tuple):
                theirs = tuple(theirs or ())
            if mine != theirs:
                raise ValueError(f"init_phase1: {source} has {name} {theirs}, this run {mine}; "
                                 "they must match")
        own = self.model.state_dict()
        upstream = {k: v for k, v in ckpt["model"].items() if not k.startswith("rank_heads.")}
        if set(upstream) != {k for k in own if not k.startswith("rank_heads.")}:
            raise ValueError(f"init_phase1: the encoder or classification heads of {source} do not fit this model")
        # Strict for the encoder and classification heads; this model's own ranking heads are kept.
        self.model.load_state_dict({**own, **upstream})

        def copy(f):
            with open(source, "rb") as src:
                shutil.copyfileobj(src, f)

        if self.dist.is_main:
            atomic_write(self.out / "best_phase1.pt", copy)
        return PhaseState(phase=2)

    def _end_phase(self, state: PhaseState):
        """Phase 1 -> phase 2 from the best phase-1 model; phase 2 -> done."""
        if state.phase == 1 and self.config.epochs_phase2 > 0 and self.method.ranking:
            self.model.load_state_dict(load_checkpoint(self.out / "best_phase1.pt")["model"])
            return PhaseState(phase=2), None, None
        if state.phase == 1 and self.dist.is_main:  # no phase 2: the phase-1 model is the result
            best = load_checkpoint(self.out / "best_phase1.pt")
            save_checkpoint(self.out / "best.pt", best)
        return dataclasses.replace(state, done=True), None, None


def train(config: config_lib.TrainConfig, resume: bool = False) -> dict:
    with distributed.session(config.device, config.dist_timeout_s):
        return Trainer(config).run(resume=resume)
