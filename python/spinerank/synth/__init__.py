"""Synthetic lumbar-IVD cohort (SPEC §10): phantom volumes with known hidden severities.

``synthesize(out_dir, subjects=300, seed=0)`` writes a dataset folder in the format
the training application reads::

    out_dir/
      labels.csv         one row per volume: ivd_id, subject_id, level, sequence, centre,
                         then one integer-grade column per task (empty cell = missing)
      volumes/<ivd_id>_<sequence>.npy
                         float32, shape (H, W, D) = (rows, columns, sagittal slices)
      latent.csv         ivd_id, then the hidden continuous severity per task
                         (for evaluation only; training never reads it)
      cohort.json        generator parameters, centre parameters, conventions, counts
      README.txt         the same in words

Conventions
-----------
* Volumes: axis 0 = rows, superior (0) to inferior; axis 1 = columns, anterior (0) to
  posterior; axis 2 = sagittal slices, from the patient's LEFT (d = 0) to the RIGHT
  (d = D - 1). The left neural foramen is drawn only in slices d < (D - 1) / 2, the right
  one only in slices d > (D - 1) / 2, the spinal canal (and a herniation) in the middle
  slices. Everything else is left-right symmetric, so reversing the slice axis
  (``vol[:, :, ::-1]``, the flip of SPEC §4/§5) gives exactly the phantom of the same
  disc with ``ForaminalStenosisLeft`` and ``ForaminalStenosisRight`` exchanged.
* Intensities: every volume is z-scored on its own (mean 0, standard deviation 1 over
  all voxels, computed in float64, stored as float32).
* Levels: ``T12/L1``, ``L1/L2``, ``L2/L3``, ``L3/L4``, ``L4/L5``, ``L5/S1`` (the ``level``
  column); a subject has a contiguous run of 1–6 of them, most often ending at L5/S1.
  IDs: subject ``S0001``, IVD ``S0001_L4-L5``, volume file ``S0001_L4-L5_T2.npy``.
* Sequences: every IVD has a T1 and a T2 volume (two rows with the same ``ivd_id``).
  Both rows carry the IVD's grades; hiding Pfirrmann and DiscNarrowing on T1 is the
  dataset's job (the task table's ``masked_for``).
* Centres ``C1``, ``C2``, ...: each has its own contrast (a gamma per sequence), Rician
  noise level, in-plane blur (resolution), bias-field strength and slice thickness
  (partial-volume mixing across slices). C1 is the largest.

The hidden severity
-------------------
For each IVD and task a Gaussian ``z`` is drawn from shared factors (subject, disc,
a "posterior complex" factor shared by canal, foramina, herniation and posterior
bulging, and a bilateral foraminal factor) plus task-specific noise, with a small
shift by level (lower levels are more degenerated). ``z`` is mapped monotonically to
the latent severity ``s`` on the task's grade scale: ``s`` lies in [0, K - 1], and the
grade boundaries are at ``s = k + 0.5`` (grade 0 = [0, 0.5), grade k = [k - 0.5, k + 0.5),
the top grade = [K - 1.5, K - 1]); within each grade ``s`` is uniform, and the grade
proportions are each task's target (``TASK_MODELS``: 65–92% normal, the rest
decreasing geometrically with grade). The recorded grade is the rater's reading: the
grade of ``s(z + e)``, ``e ~ N(0, 0.2)``. The rater thus errs only near a boundary
(about one grade in seven differs from the grade of ``s``), by one grade, and without
changing the expected proportions (the noise is applied where ``z`` is Gaussian, so
the flows across a boundary balance). About 3% of the (IVD, task) grades are then
removed at random (missing in both rows of the IVD). ``latent.csv`` holds ``s``.

The phantom
-----------
A sagittal vertebra–disc–vertebra stack, drawn with smooth masks (numpy, vectorised)
on three 2-D images (midline, left lateral, right lateral) that are blended across the
slices. Each task's fraction ``x = s / (K - 1)`` in [0, 1] acts as follows:

====================== ===============================================================
Pfirrmann              nucleus signal: on T2 bright (0.92) when normal, dark (0.28)
                       at the top grade; on T1 it darkens slightly
DiscNarrowing          disc height, down to 45% at the top grade
CentralCanalStenosis   the canal's posterior wall (ligamentum flavum) moves forward at
                       the disc level: canal width down to 40% (middle slices)
Spondylolisthesis      the upper vertebra (and the upper half of the disc) slides
                       anteriorly, by up to 12% of the width
UpperEndplateDefect    a notch (T1 dark, T2 bright) into the upper vertebra's endplate
LowerEndplateDefect    the same into the lower vertebra's endplate
ForaminalStenosisLeft  the left foramen (bright fat, T1 and T2) shrinks to 40% (left slices)
ForaminalStenosisRight the right foramen, in the right slices
Herniation             a focal posterior protrusion into the canal (middle slices)
AnteriorBulging        a broad anterior bulge of the disc margin (all slices)
PosteriorBulging       a broad posterior bulge of the disc margin (all slices)
====================== ===============================================================

Determinism: subject ``i`` is generated from its own ``numpy.random.SeedSequence(seed,
spawn_key=(1, i))`` and the centres from ``spawn_key=(0,)``, so the output depends on
the seed (and the other arguments) but not on ``workers``, and the first N subjects
of a larger cohort equal a cohort of N subjects with the same seed and centres.

Parallel runs use worker processes started with "spawn": in a script, call
``synthesize`` under ``if __name__ == "__main__":``.

The package: ``latent`` (the hidden severity), ``drawing`` (the phantom), ``cohort``
(the centres and subjects, volumes written as drawn), ``files`` (the folder and the
files besides the volumes); ``synthesize``, here, runs them in that order.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import time
from collections.abc import Sequence

from ..checkpoint import atomic_write_text
from .cohort import LEVELS, _Config, _draw_centres, _make_chunk, _make_subject
from .drawing import DEFAULT_SHAPE, SEQUENCES, Anatomy, Centre, _check_shape, _is_int, phantom
from .files import GENERATOR, VERSION, _prepare_out_dir, _summarise, _write_files
from .latent import TASK_MODELS, TaskModel, _check_tasks

__all__ = [
    "synthesize",
    "phantom",
    "Anatomy",
    "Centre",
    "TaskModel",
    "TASK_MODELS",
    "LEVELS",
    "SEQUENCES",
    "DEFAULT_SHAPE",
    "GENERATOR",
    "VERSION",
]


def synthesize(out_dir, subjects: int = 300, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
               centres: int = 3, tasks=None, workers: int | None = None, progress: bool = True,
               *, overwrite: bool = False) -> dict:
    """Write a synthetic cohort to ``out_dir`` and return a summary dict.

    Arguments: ``subjects`` >= 1; ``seed`` >= 0; ``shape`` (H, W, D) with H, W >= 16 and
    D >= 3 (the paper's volumes are (192, 320, 15)); ``centres`` >= 1; ``tasks`` a
    ``TaskTable``, a sequence of ``Task`` or of task dicts (default: SPEC §2), every
    name one the phantom can draw; ``workers`` processes (default: the CPUs available,
    at most one per 8 subjects; 1 = in this process); ``progress`` shows a tqdm bar; ``overwrite`` replaces a
    cohort previously written by this generator (never another dataset).

    The summary holds ``subjects``, ``ivds``, ``volumes``, ``centres`` (subjects per
    centre), ``levels`` (IVDs per level), per task ``grade_counts``, ``prevalence``
    (proportion of each grade among the labelled IVDs), ``normal_prevalence`` and
    ``missing`` (IVDs without a grade), the arguments, and ``seconds``.

    Volumes are written first (each via a temporary file and a rename), then
    ``latent.csv``, ``cohort.json`` and ``README.txt``, and ``labels.csv`` last, so an
    interrupted run never leaves a ``labels.csv`` that names a missing volume.
    """
    t0 = time.perf_counter()
    shape, table = _check_arguments(subjects, seed, centres, workers, shape, tasks)
    subjects, seed, centres = int(subjects), int(seed), int(centres)
    if out_dir is None or str(out_dir) == "":
        raise ValueError("out_dir must be a folder path")
    out = pathlib.Path(out_dir)
    _prepare_out_dir(out, overwrite)

    centre_list = _draw_centres(seed, centres)
    params = {
        "generator": GENERATOR, "version": VERSION, "subjects": subjects, "seed": seed,
        "shape": list(shape), "centres": centres, "tasks": table.to_config(),
    }
    # A marker first: an interrupted run leaves a folder that overwrite=True may replace.
    atomic_write_text(out / "cohort.json", json.dumps({**params, "complete": False}, indent=2) + "\n")

    cfg = _Config(str(out), seed, shape, table, tuple(centre_list))
    # Explicit workers are honoured (up to one per subject); the default skips the
    # process start-up cost for small cohorts.
    n_workers = min(workers, subjects) if workers else min(_default_workers(), max(1, subjects // 8))
    results = _draw_subjects(cfg, subjects, n_workers, progress)

    label_rows = [row for r in results for row in r[0]]
    latent_rows = [row for r in results for row in r[1]]
    summary = _summarise(label_rows, latent_rows, table, centre_list)
    summary.update({"out_dir": str(out), "seed": seed, "shape": list(shape)})
    _write_files(out, params, summary, label_rows, latent_rows, table, centre_list)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _check_arguments(subjects, seed, centres, workers, shape, tasks):
    """synthesize's arguments checked, in its order; returns (shape, task table)."""
    if not _is_int(subjects) or subjects < 1:
        raise ValueError(f"subjects must be an int >= 1, got {subjects!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not _is_int(centres) or centres < 1:
        raise ValueError(f"centres must be an int >= 1, got {centres!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be None or an int >= 1, got {workers!r}")
    return _check_shape(shape), _check_tasks(tasks)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1



def _draw_subjects(cfg: _Config, subjects: int, n_workers: int, progress: bool) -> list:
    """Every subject drawn and its volumes written, in this process or in ``n_workers``
    spawned ones: per subject (its label rows, its latent rows), in subject order."""
    results: list = [None] * subjects
    bar = None
    if progress:
        try:
            from ..progress import progress_bar
            bar = progress_bar(total=subjects, unit="subject", desc="synth")
        except ImportError:  # progress bars are a nicety, not a requirement
            bar = None
    try:
        if n_workers <= 1:
            for i in range(subjects):
                results[i] = _make_subject(cfg, i, subjects)
                if bar is not None:
                    bar.update(1)
        else:
            import concurrent.futures as cf
            import multiprocessing as mp

            size = max(1, min(32, math.ceil(subjects / (4 * n_workers))))
            chunks = [list(range(s, min(s + size, subjects))) for s in range(0, subjects, size)]
            with cf.ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as ex:
                futures = {ex.submit(_make_chunk, cfg, c, subjects): c for c in chunks}
                try:
                    for fut in cf.as_completed(futures):
                        for i, r in zip(futures[fut], fut.result()):
                            results[i] = r
                        if bar is not None:
                            bar.update(len(futures[fut]))
                except cf.process.BrokenProcessPool as e:
                    raise RuntimeError(
                        "a synth worker process died. Worker processes are started with 'spawn': "
                        "a script that calls synthesize must do so under `if __name__ == \"__main__\":` "
                        "(or pass workers=1)") from e
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    return results
