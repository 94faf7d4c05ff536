"""The files of the synthetic cohort besides its volumes: the output folder (only a
cohort of this generator is replaced), labels.csv, latent.csv, cohort.json, README.txt
and the summary."""
from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import shutil
from collections.abc import Iterable, Sequence

from ..checkpoint import atomic_write_text
from ..tasks import TaskTable
from .cohort import LEVELS
from .drawing import SEQUENCES
from .latent import MISSING_RATE, RATER_SIGMA, TASK_MODELS

GENERATOR = "spinerank.synth"
#: Bumped whenever the same arguments would produce different files.
VERSION = 1


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


_OWNED = ("labels.csv", "latent.csv", "cohort.json", "README.txt", "splits.csv")


def _prepare_out_dir(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    existing = [n for n in ("labels.csv", "volumes", "cohort.json") if (out / n).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"out_dir {str(out)!r} already holds a dataset ({', '.join(existing)}); "
                "pass overwrite=True to replace a synthetic cohort, or choose another folder")
        meta = out / "cohort.json"
        try:
            is_synth = json.loads(meta.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            is_synth = False
        if not is_synth:
            raise FileExistsError(
                f"refusing to overwrite {str(out)!r}: it has {', '.join(existing)} but no cohort.json "
                f"written by {GENERATOR}, so it may not be a synthetic cohort")
        # labels.csv goes first: from here on no labels.csv points at the old volumes.
        for name in _OWNED:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "volumes", ignore_errors=True)
    (out / "volumes").mkdir(parents=True, exist_ok=True)


_README = """Synthetic lumbar IVD cohort written by {generator} (version {version}).
Phantom images with known hidden severities; not real patients.

Parameters: subjects={subjects} seed={seed} shape(H, W, D)={shape} centres={centres}
Subjects {subjects}, IVDs {ivds}, volumes {volumes}.

labels.csv   one row per volume: ivd_id, subject_id, level, sequence (T1|T2), centre,
             then one column per task with the integer grade 0..K-1 (empty = missing).
             Both rows of an IVD carry its grades; Pfirrmann and DiscNarrowing are
             to be masked for T1 by the dataset (task table).
volumes/     <ivd_id>_<sequence>.npy, float32 (H, W, D) = (rows superior->inferior,
             columns anterior->posterior, sagittal slices patient LEFT (d=0) -> RIGHT).
             The left foramen is drawn in slices d < (D-1)/2, the right one in
             d > (D-1)/2; reversing the slice axis swaps the ForaminalStenosis labels.
             Each volume is z-scored (mean 0, std 1).
latent.csv   ivd_id, then the hidden continuous severity s per task on the grade scale:
             s in [0, K-1], grade boundaries at s = k + 0.5; the grades in labels.csv
             add rater noise near the boundaries. Never used for training.
cohort.json  all generator and centre parameters, conventions and counts.

Normal (grade 0) prevalence per task:
{prevalence}
"""


def _summarise(label_rows, latent_rows, table: TaskTable, centre_list) -> dict:
    ivd_rows = [r for r in label_rows if r[3] == SEQUENCES[0]]
    centres = {c.name: 0 for c in centre_list}
    levels = {lv: 0 for lv in LEVELS}
    seen = set()
    for r in ivd_rows:
        levels[r[2]] += 1
        if r[1] not in seen:
            seen.add(r[1])
            centres[r[4]] += 1
    counts, prevalence, normal, missing = {}, {}, {}, {}
    for t, task in enumerate(table.tasks):
        col = [r[5 + t] for r in ivd_rows]
        c = [0] * task.num_grades
        for v in col:
            if v != "":
                c[int(v)] += 1
        n = sum(c)
        counts[task.name] = c
        prevalence[task.name] = [round(k / n, 4) if n else 0.0 for k in c]
        normal[task.name] = prevalence[task.name][0]
        missing[task.name] = len(col) - n
    return {
        "subjects": len(seen), "ivds": len(ivd_rows), "volumes": len(label_rows),
        "centres": centres, "levels": levels, "grade_counts": counts, "prevalence": prevalence,
        "normal_prevalence": normal, "missing": missing,
    }


def _write_files(out: pathlib.Path, params: dict, summary: dict, label_rows, latent_rows, table: TaskTable,
                 centre_list) -> None:
    """latent.csv, cohort.json (complete, with every parameter and the summary),
    README.txt, and labels.csv last: no labels.csv names a volume not yet written."""
    names = table.names
    atomic_write_text(out / "latent.csv", _csv_text(["ivd_id"] + names, latent_rows))
    meta = {
        **params, "complete": True,
        "centre_parameters": [dataclasses.asdict(c) for c in centre_list],
        "task_models": {t.name: dataclasses.asdict(TASK_MODELS[t.name]) for t in table.tasks},
        "rater_sigma": RATER_SIGMA, "missing_rate": MISSING_RATE, "levels": list(LEVELS),
        "conventions": {
            "array": "(H, W, D) = (rows superior->inferior, columns anterior->posterior, "
                     "sagittal slices patient left (d=0) -> right)",
            "left_right": "left foramen in slices d < (D-1)/2, right foramen in d > (D-1)/2; "
                          "reversing the slice axis swaps ForaminalStenosisLeft/Right",
            "normalisation": "per volume z-score: mean 0, std 1 over all voxels; float32",
            "latent": "s in [0, K-1] on the grade scale; grade boundaries at s = k + 0.5 before rater noise",
            "rater": "grade of s(z + e), e ~ N(0, rater_sigma), z the standard-normal latent behind s",
        },
        "summary": {k: v for k, v in summary.items() if k not in ("out_dir", "seed", "shape")},
    }
    atomic_write_text(out / "cohort.json", json.dumps(meta, indent=2) + "\n")
    prevalence = "\n".join(f"  {n:24s} {summary['normal_prevalence'][n]:.3f}" for n in names)
    atomic_write_text(out / "README.txt", _README.format(
        generator=GENERATOR, version=VERSION, subjects=params["subjects"], seed=params["seed"],
        shape=tuple(params["shape"]), centres=params["centres"], ivds=summary["ivds"], volumes=summary["volumes"],
        prevalence=prevalence))
    header = ["ivd_id", "subject_id", "level", "sequence", "centre"] + names
    atomic_write_text(out / "labels.csv", _csv_text(header, label_rows))
