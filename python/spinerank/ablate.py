"""The paper's ablations (``spinerank ablate``): ranking heads and threshold methods.

- ``what="thresholds"`` (post hoc, one trained ranking run): every threshold
  method of ``thresholds.METHODS`` (grid, isotonic, youden, gmm) fitted per task
  on the run's validation scores and applied to its test scores. The scores are
  computed once, with TTA or without and on the same sequences for both splits,
  as ``calibrate`` and ``evaluate`` compute them: the grid row is the run's
  evaluation with its calibrated thresholds.
- ``what="heads"``: phase 2 of each ranking head variant (``rank_head``: mlp,
  linear, kan, transformer) from one shared phase-1 model. ``ce`` is trained once
  in ``OUT/ce``; each head trains in ``OUT/<head>`` with ``init_phase1`` set to
  that model, as ``compare`` starts its ranking methods; each is then calibrated
  and evaluated (``OUT/<head>/eval``). A finished run is reused and an
  interrupted one resumed, so running ablate again after a failure loses nothing.

Both write ``ablation.md`` and ``ablation.json``: balanced accuracy and QWK per
variant, mean ± std over tasks (the paper's ablation paragraph), per task too,
and the paper's numbers for reference.
"""
from __future__ import annotations

import json
import math
import pathlib
import time
import warnings

import numpy as np

from . import calibrate as calibrate_lib
from . import config as config_lib
from . import methods as methods_lib
from . import metrics as metrics_lib
from . import thresholds as thresholds_lib
from .checkpoint import atomic_write_text, json_safe
from .compare import _train
from .progress import summaries

KINDS = ("thresholds", "heads")

#: The paper's ablation paragraph (Genodisc test split): BA (fraction) and QWK, mean over the 11 tasks.
PAPER = {
    "heads": {"mlp": (0.633, 0.762), "linear": (0.583, 0.733), "kan": (0.610, 0.698),
              "transformer": (0.418, 0.303)},
    "thresholds": {"grid": (0.633, 0.762), "isotonic": (0.557, 0.744), "youden": (0.588, 0.685),
                   "gmm": (0.543, 0.448)},
}
_NAMES = ("balanced_accuracy", "qwk")


def ba_qwk(grades, predicted, num_grades: int) -> dict:
    """Balanced accuracy and QWK (scikit-learn, as ``evaluate``) of one task; nan without labels."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    grades, predicted = np.asarray(grades), np.asarray(predicted)
    if grades.size == 0:
        return {"balanced_accuracy": float("nan"), "qwk": float("nan"), "n": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"balanced_accuracy": float(balanced_accuracy_score(grades, predicted)),
                "qwk": float(cohen_kappa_score(grades, predicted, weights="quadratic",
                                               labels=list(range(num_grades)))),
                "n": int(grades.size)}


def _variant(per_task: dict) -> dict:
    return {**metrics_lib.aggregate(per_task, names=_NAMES), "tasks": per_task}


def ablate_thresholds(run, out=None, tta: bool = True, sequences=None, objective: str = "composite",
                      device: str = "cpu", progress: bool = True, data: str | None = None) -> dict:
    """Every threshold method on one trained ranking run; writes OUT/ablation.{md,json}
    (OUT: ``RUN/ablation-thresholds``, ``-no-tta`` without TTA) and returns the JSON's content."""
    started = time.perf_counter()
    run = pathlib.Path(run)
    sequences = calibrate_lib.normalize_sequences(sequences)
    predictor = calibrate_lib.run_predictor(run, device, data)
    if not predictor.method.ranking:
        raise ValueError(f"{run} was trained with --method {predictor.method.name}, which grades with its "
                         "classifier; the threshold ablation needs a ranking run "
                         f"({', '.join(methods_lib.ranking_names())})")
    out = pathlib.Path(out) if out else run / ("ablation-thresholds" if tta else "ablation-thresholds-no-tta")
    out.mkdir(parents=True, exist_ok=True)
    val = calibrate_lib.split_dataset(predictor, "val", sequences)
    test = calibrate_lib.split_dataset(predictor, "test", sequences)
    val_pred, val_grades = predictor.predict_dataset(val, tta, progress=progress, desc="validation scores")
    test_pred, test_grades = predictor.predict_dataset(test, tta, progress=progress, desc="test scores")
    variants = {}
    for method in thresholds_lib.METHODS:
        per_task = {}
        for t, (name, K) in enumerate(zip(predictor.tasks.names, predictor.tasks.num_grades)):
            fit = val_grades[:, t] >= 0
            tau, problem = None, None
            if fit.any():
                try:
                    tau = thresholds_lib.fit_thresholds(val_pred.scores[fit, t], val_grades[fit, t], K,
                                                        objective=objective, method=method)
                except ValueError as exc:  # e.g. a mixture of K Gaussians on fewer validation scores
                    problem = f"{method} cannot be fitted on {int(fit.sum())} validation score(s): {exc}"
            else:
                problem = "no labelled validation disc"
            if tau is None:  # the fixed thresholds of training, as calibrate does without labels
                tau = metrics_lib.fixed_thresholds(K, predictor.scale)
            keep = test_grades[:, t] >= 0
            predicted = metrics_lib.grades_from_scores(test_pred.scores[keep, t], tau)
            per_task[name] = {**ba_qwk(test_grades[keep, t], predicted, K), "thresholds": [float(v) for v in tau],
                              "fitted": problem is None}
            if problem:
                per_task[name]["not_fitted"] = problem
        variants[method] = _variant(per_task)
        if summaries(progress):
            agg = variants[method]
            print(f"{method}: BA {agg['balanced_accuracy']['mean']:.3f}, QWK {agg['qwk']['mean']:.3f}", flush=True)
    result = {"what": "thresholds", "run": str(run), "method": predictor.method.name, "objective": objective,
              **_scope(tta, test.selection), "variants": variants, "paper": _paper("thresholds"),
              "seconds": round(time.perf_counter() - started, 1)}
    _write(out, result)
    return result


def ablate_heads(data: str, out, heads=config_lib.RANK_HEADS, method: str = "spinerank", preset: str | None = None,
                 config_file: str | None = None, tta: bool = True, device: str = "cpu", progress: bool = True,
                 sequences=None, **overrides) -> dict:
    """Phase 2 of each ranking head from one shared phase-1 ``ce`` model; writes
    OUT/ablation.{md,json} and returns the JSON's content."""
    from .evaluate import evaluate

    started = time.perf_counter()
    sequences = calibrate_lib.normalize_sequences(sequences)
    heads = list(dict.fromkeys(heads))
    unknown = [h for h in heads if h not in config_lib.RANK_HEADS]
    if unknown or not heads:
        raise ValueError(f"heads must be among {', '.join(config_lib.RANK_HEADS)}, got {heads!r}")
    if not methods_lib.get(method).ranking:
        raise ValueError("the head ablation trains ranking heads: method must be "
                         f"{methods_lib.spoken(methods_lib.ranking_names())}, got {method!r}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(overrides, data=data, device=device, progress=progress)
    # The shared phase 1 has no ranking loss: rank_anchor (given or in the file) is for the heads' runs.
    _train(out / "ce", config_lib.resolve(preset, config_file, **{**common, "rank_anchor": 0.0}, out=str(out / "ce"),
                                          method="ce"), progress)
    phase1 = str(out / "ce" / "best_phase1.pt")
    for head in heads:
        config = config_lib.resolve(preset, config_file, **common, out=str(out / head), method=method,
                                    rank_head=head, init_phase1=phase1)
        _train(out / head, config, progress)
    variants, first = {}, None
    for head in heads:
        if summaries(progress):
            print(f"== evaluating the {head} head", flush=True)
        evaluated = evaluate(out / head, tta=tta, device=device, progress=progress, sequences=sequences)
        first = first or evaluated
        per_task = {name: {"balanced_accuracy": m["balanced_accuracy"], "qwk": m["qwk"], "n": m["n"]}
                    for name, m in evaluated["tasks"].items()}
        variants[head] = _variant(per_task)
    selection = calibrate_lib.Selection(tuple(first["sequences"]), first["volumes"], first["rows"]["discs"],
                                        first["skipped_discs"])
    result = {"what": "heads", "data": str(data), "method": method, "phase1": phase1, **_scope(tta, selection),
              "variants": variants, "paper": _paper("heads"), "seconds": round(time.perf_counter() - started, 1)}
    _write(out, result)
    return result


def ablate(what: str, *, run=None, data=None, out=None, **options) -> dict:
    """``ablate("thresholds", run=RUN)`` or ``ablate("heads", data=D, out=O)``; see the module."""
    if what == "thresholds":
        if run is None:
            raise ValueError("the threshold ablation needs --run RUN (a trained ranking run)")
        return ablate_thresholds(run, out=out, data=data, **options)
    if what == "heads":
        if data is None or out is None:
            raise ValueError("the head ablation needs --data DIR and --out DIR")
        return ablate_heads(data, out, **options)
    raise ValueError(f"what must be one of {', '.join(KINDS)}, got {what!r}")


def _scope(tta: bool, selection) -> dict:
    return {"tta": bool(tta), "sequences": list(selection.sequences), "unit": selection.unit,
            "volumes": selection.rows, "skipped_discs": selection.skipped}


def _paper(what: str) -> dict:
    return {name: {"balanced_accuracy": ba, "qwk": qwk} for name, (ba, qwk) in PAPER[what].items()}


def _write(out: pathlib.Path, result: dict) -> None:
    atomic_write_text(out / "ablation.json", json.dumps(json_safe(result), indent=2) + "\n")
    atomic_write_text(out / "ablation.md", ablation_markdown(result))


def _pm(agg: dict, percent: bool) -> str:
    mean, std = agg["mean"], agg["std"]
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if percent else f"{mean:.3f} ± {std:.3f}"


def ablation_markdown(result: dict) -> str:
    """The variants' BA (%) and QWK, mean ± std over tasks, beside the paper's."""
    from .compare import scope_line

    what = result["what"]
    variant = "head" if what == "heads" else "threshold method"
    if what == "heads":
        title = f"# Ablation: ranking heads ({result['method']}, {result['data']})"
        how = (f"Phase 2 of each head from one shared phase-1 model ({result['phase1']}); thresholds calibrated on "
               "the validation split (grid search).")
    else:
        title = f"# Ablation: threshold methods ({result['run']})"
        how = (f"Each method fitted per task on the validation scores of one trained {result['method']} run "
               f"(objective {result['objective']} where it applies), applied to the same run's test scores.")
    tta = "with TTA" if result["tta"] else "without TTA"
    lines = [title, "", f"{scope_line(result)}, {tta}. {how} Balanced accuracy (BA, %) and QWK: mean ± std over "
             "tasks.", "", f"| {variant} | BA (%) ↑ | QWK ↑ | paper BA (%) | paper QWK |", "|---|---|---|---|---|"]
    for name, agg in result["variants"].items():
        paper = result["paper"].get(name)
        ref = (f"{100 * paper['balanced_accuracy']:.1f} | {paper['qwk']:.3f}") if paper else "– | –"
        lines.append(f"| {name} | {_pm(agg['balanced_accuracy'], True)} | {_pm(agg['qwk'], False)} | {ref} |")
    unfitted = {name: [t for t, m in agg["tasks"].items() if not m.get("fitted", True)]
                for name, agg in result["variants"].items()}
    for name, tasks in unfitted.items():
        if tasks:
            lines += ["", f"{name}: not fitted on {len(tasks)} task(s) ({', '.join(tasks)}; too few labelled "
                      "validation discs), graded with the fixed thresholds (c + 0.5)·S/(K−1) there."]
    lines += ["", "The paper's numbers (its ablation paragraph: Genodisc test split, full protocol) are for "
              "reference; a run on other data or a smaller protocol is not expected to match them.", "",
              "## Per task", "", f"| task | " + " | ".join(f"{n} BA / QWK" for n in result["variants"]) + " |",
              "|---|" + "---|" * len(result["variants"])]
    tasks = next(iter(result["variants"].values()))["tasks"] if result["variants"] else {}
    for task in tasks:
        cells = []
        for agg in result["variants"].values():
            m = agg["tasks"][task]
            ba, qwk = m["balanced_accuracy"], m["qwk"]
            cells.append("–" if ba is None or not math.isfinite(ba) else
                         f"{100 * ba:.1f} / " + ("–" if qwk is None or not math.isfinite(qwk) else f"{qwk:.3f}"))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
