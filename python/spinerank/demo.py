"""``spinerank demo``: the whole method on the embedded synthetic cohort.

Synthesises a cohort (``OUT/cohort``), then compares CE and SpineRankNet on it
(all six methods with ``all_methods``) with the ``tiny`` preset: training,
calibration, evaluation with TTA and the reports (``OUT/compare``). Sized to
finish within 10 minutes on a 2-core CPU.
"""
from __future__ import annotations

import pathlib
import time

from . import methods as methods_lib
from .progress import summaries


def demo(out, all_methods: bool = False, subjects: int = 200, seed: int = 0, progress: bool = True,
         seeds=None) -> dict:
    """``seed``: the cohort's and, without ``seeds``, the training's; ``seeds``:
    train every method once per seed (``compare``'s ``seeds``)."""
    from .compare import compare
    from .synth import synthesize

    started = time.perf_counter()
    out = pathlib.Path(out)
    cohort = out / "cohort"
    if (cohort / "labels.csv").exists():
        if summaries(progress):
            print(f"== reusing the synthetic cohort in {cohort}", flush=True)
    else:
        if summaries(progress):
            print(f"== synthesising {subjects} subjects into {cohort}", flush=True)
        synthesize(cohort, subjects=subjects, seed=seed, progress=progress)
    methods = methods_lib.names() if all_methods else ("ce", "spinerank")
    training = {"seed": seed} if seeds is None else {"seeds": seeds}
    summary = compare(str(cohort), str(out / "compare"), methods=methods, preset="tiny", tta=True,
                      progress=progress, **training)
    minutes = (time.perf_counter() - started) / 60
    if summaries(progress):
        print((out / "compare" / "comparison.md").read_text())
        runs = f"{out}/compare/<method>" if seeds is None else f"{out}/compare/seed-<s>/<method>"
        print(f"demo finished in {minutes:.1f} min: comparison in {out}/compare/comparison.md, "
              f"reports in {runs}/eval/report.md", flush=True)
    return summary
