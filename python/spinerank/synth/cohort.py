"""The subjects of the synthetic cohort: the centres, each subject's levels, latent
severities, grades and volumes (written as it is drawn), from its own seed."""
from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from ..checkpoint import atomic_write
from ..tasks import TaskTable
from .drawing import SEQUENCES, Anatomy, Centre, _render
from .latent import _KNOWN, MISSING_RATE, RATER_SIGMA, TASK_MODELS, _latent_from_z, _task_bands

LEVELS = ("T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")

# How many levels a subject has (1..6), and the level shift of the latent (T12/L1..L5/S1).
_NUM_LEVELS_P = (0.04, 0.04, 0.07, 0.10, 0.55, 0.20)
_LEVEL_SHIFT = (-0.25, -0.20, -0.10, 0.0, 0.20, 0.25)


def _draw_centres(seed: int, n: int) -> list[Centre]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    out = []
    for c in range(n):
        gt1, gt2 = rng.uniform(0.7, 1.4, size=2)
        out.append(Centre(
            name=f"C{c + 1}",
            gamma_t1=round(float(gt1), 4), gamma_t2=round(float(gt2), 4),
            noise=round(float(rng.uniform(0.015, 0.06)), 4),
            blur=round(float(rng.uniform(0.3, 1.3)), 4),
            bias=round(float(rng.uniform(0.0, 0.3)), 4),
            slab=round(float(rng.uniform(0.2, 0.35)), 4),
            slab_width=round(float(rng.uniform(0.3, 0.5)), 4),
        ))
    return out


def _centre_weights(n: int) -> np.ndarray:
    w = 1.0 / (1.0 + 0.5 * np.arange(n))
    return w / w.sum()


@dataclasses.dataclass(frozen=True)
class _Config:
    out_dir: str
    seed: int
    shape: tuple[int, int, int]
    table: TaskTable
    centres: tuple[Centre, ...]


def _subject_id(i: int, subjects: int) -> str:
    return f"S{i + 1:0{max(4, len(str(subjects)))}d}"


def _make_subject(cfg: _Config, i: int, subjects: int):
    """Draw subject i, write its volumes; return its label rows and latent rows."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, i)))
    T = len(_KNOWN)
    table = cfg.table
    sid = _subject_id(i, subjects)
    centre = cfg.centres[int(rng.choice(len(cfg.centres), p=_centre_weights(len(cfg.centres))))]
    n = int(rng.choice(6, p=_NUM_LEVELS_P)) + 1
    end = 6 if (n == 6 or rng.random() < 0.75) else int(rng.integers(n, 6))
    first = end - n
    subject_factor = rng.standard_normal()
    base = Anatomy(
        disc_h=0.20 * rng.uniform(0.94, 1.06), depth=0.40 * rng.uniform(0.95, 1.05),
        canal=0.12 * rng.uniform(0.92, 1.08), foramen_ry=0.17 * rng.uniform(0.92, 1.08),
        foramen_rx=0.05 * rng.uniform(0.9, 1.1),
    )
    load = np.array([TASK_MODELS[t].loadings for t in _KNOWN])  # (T, 4)
    resid = np.sqrt(1.0 - (load ** 2).sum(1))
    lvl_load = np.array([TASK_MODELS[t].level for t in _KNOWN])
    vol_dir = pathlib.Path(cfg.out_dir) / "volumes"

    label_rows, latent_rows = [], []
    for li in range(first, end):
        level = LEVELS[li]
        ivd = f"{sid}_{level.replace('/', '-')}"
        factors = np.concatenate([[subject_factor], rng.standard_normal(3)])
        # (no BLAS: an elementwise product and a short sum give the same bits everywhere)
        z = (load * factors).sum(1) + resid * rng.standard_normal(T) + lvl_load * _LEVEL_SHIFT[li]
        rater = rng.normal(0.0, RATER_SIGMA, size=T)
        missing = rng.random(T) < MISSING_RATE
        anat = dataclasses.replace(
            base, disc_h=base.disc_h * rng.uniform(0.97, 1.03), nucleus=rng.uniform(0.42, 0.58),
            notch_u=rng.uniform(0.3, 0.7), notch_l=rng.uniform(0.3, 0.7))
        s_row, g_row, x = [], [], {}
        for task in table.tasks:
            t = _KNOWN.index(task.name)
            K = task.num_grades
            q = _task_bands(task.name, K)
            s = float(_latent_from_z(np.array([z[t]]), q)[0])
            # The rater reads a slightly perturbed severity: the grade of z + e, at most
            # one grade away from the grade of s.
            true = min(math.floor(s + 0.5), K - 1)
            read = math.floor(_latent_from_z(np.array([z[t] + rater[t]]), q)[0] + 0.5)
            grade = int(np.clip(read, max(0, true - 1), min(K - 1, true + 1)))
            s_row.append(f"{s:.6f}")
            g_row.append("" if missing[t] else str(grade))
            x[task.name] = s / (K - 1)
        for seq in SEQUENCES:
            jitter = (rng.uniform(-0.03, 0.03) * cfg.shape[0], rng.uniform(-0.02, 0.02) * cfg.shape[1])
            bias = tuple(rng.uniform(-centre.bias, centre.bias, size=2))
            vol = _render(x, seq, cfg.shape, anat, centre, rng=rng, jitter=jitter, bias=bias)
            path = vol_dir / f"{ivd}_{seq}.npy"
            atomic_write(path, lambda f, vol=vol: np.save(f, vol), durable=False)
            label_rows.append([ivd, sid, level, seq, centre.name] + g_row)
        latent_rows.append([ivd] + s_row)
    return label_rows, latent_rows


def _make_chunk(cfg: _Config, indices: Sequence[int], subjects: int):
    return [_make_subject(cfg, i, subjects) for i in indices]
