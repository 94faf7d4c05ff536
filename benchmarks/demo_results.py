"""Runs the application results of the README and docs/ and writes them as result files.

    python benchmarks/demo_results.py [--work DIR] [--only NAME ...]

Each run is timed on its own (run it on a quiet machine) and written to
``benchmarks/results/demo-<name>.json``: the command's own JSON (comparison.json
or ablation.json) under ``result``, with the command line, wall time, machine,
torch version, thread count, load average and date. ``render_table.py --all``
renders them into the ``<!-- bench: demo-*.json -->`` blocks of README.md and
docs/*.md, wherever they are.

- ``comparison``: ``spinerank demo`` (CE and SpineRankNet);
- ``comparison-all``: ``spinerank demo --all-methods`` (in its own folder, so
  that no run is reused and the time is the whole command's);
- ``ablation-heads``: ``spinerank ablate --what heads`` on the demo cohort
  (tiny preset, seed 0, as the demo);
- ``ablation-thresholds``: ``spinerank ablate --what thresholds`` on the
  all-methods demo's SpineRankNet run;
- ``seeds``: ``spinerank compare --seeds 0 1 2`` of CE and the three ranking
  methods on the demo's cohort (``spinerank synth --subjects 200 --seed 0``,
  made first if missing and not timed): every method once per seed, paired
  differences against CE;
- ``anchor``: SpineRankNet with the phase-2 anchor term (``--rank-anchor``) at
  each weight of ``ANCHORS``, trained from the ``seeds`` run's CE phase 1 of each
  seed (``spinerank compare --seeds 0 1 2 --rank-anchor W`` with those CE runs
  copied in), compared with the plain SpineRankNet runs of ``seeds`` (paired
  bootstrap, as compare does against CE) and by how much of the score range
  [0, S] the test scores use.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SPINERANK = [sys.executable, "-m", "spinerank"]


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # The instruction set torch's kernels dispatch to (AVX2, AVX512, ...): two
    # CPUs of one model name may differ in it, and with it the last digits.
    return {"cpu_model": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average_before": list(os.getloadavg())}


def run(name: str, args: list[str], result_file: pathlib.Path, work: pathlib.Path) -> None:
    info = machine()
    started = time.perf_counter()
    # Not from the repository root, where `spinerank_ext/` (the sources) would shadow the installed package.
    subprocess.run(SPINERANK + args, check=True, cwd=RESULTS.parent)
    seconds = time.perf_counter() - started
    record = {"name": name, "command": "spinerank " + " ".join(args), "seconds": round(seconds, 1),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": {**info, "load_average_after": list(os.getloadavg())},
              "result": json.loads(result_file.read_text())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2).replace(str(work), "DIR")  # folders inside the result too
    (RESULTS / f"demo-{name}.json").write_text(text + "\n")
    print(f"== {name}: {seconds / 60:.1f} min -> benchmarks/results/demo-{name}.json", flush=True)


SEEDS = ("0", "1", "2")
SEED_METHODS = ("ce", "ranknet", "deeprank", "spinerank")
ANCHORS = (0.1, 1.0)


def score_spread(outcomes, scale: float) -> dict:
    """How much of [0, S] the test scores use: per run, the mean over tasks of the
    5th-95th percentile range of the labelled discs' scores, as a fraction of S;
    and the highest score. Mean over the runs (seeds)."""
    import numpy as np

    ranges, highest = [], []
    for o in outcomes:
        per_task = []
        for t in range(o.scores.shape[1]):
            s = o.scores[o.grades[:, t] >= 0, t]
            if s.size:
                low, high = np.percentile(s, [5, 95])
                per_task.append((high - low) / scale)
        ranges.append(float(np.mean(per_task)))
        highest.append(float(o.scores.max()))
    return {"range_fraction": float(np.mean(ranges)), "range_fraction_per_seed": ranges,
            "max_score": float(np.max(highest))}


def anchor_runs(work: pathlib.Path) -> None:
    """The ``anchor`` result: SpineRankNet with and without the anchor term, same phase 1 per seed."""
    from spinerank.bootstrap import load_outcome, paired_differences

    seeds_dir = work / "seeds" / "compare"
    cohort = work / "seeds" / "cohort"
    outcome = lambda run: load_outcome(run / "eval" / "outcome.npz")  # noqa: E731
    plain = [outcome(seeds_dir / f"seed-{s}" / "spinerank") for s in SEEDS]
    scale = json.loads((seeds_dir / f"seed-{SEEDS[0]}" / "spinerank" / "config.json").read_text())["score_scale"]
    info = machine()
    started = time.perf_counter()
    result = {"seeds": [int(s) for s in SEEDS], "weights": list(ANCHORS), "baseline": "spinerank",
              "plain": {"spread": score_spread(plain, scale)}, "anchors": {}}
    commands = []
    for weight in ANCHORS:
        out = work / f"anchor-{weight:g}"
        shutil.rmtree(out, ignore_errors=True)
        for s in SEEDS:  # the same phase 1 as the plain runs: their seed's CE run, reused as trained
            shutil.copytree(seeds_dir / f"seed-{s}" / "ce", out / f"seed-{s}" / "ce")
        args = ["compare", "--data", str(cohort), "--out", str(out), "--methods", "ce", "spinerank", "--seeds",
                *SEEDS, "--preset", "tiny", "--rank-anchor", f"{weight:g}", "--quiet"]
        commands.append("spinerank " + " ".join(args))
        subprocess.run(SPINERANK + args, check=True, cwd=RESULTS.parent, stdout=subprocess.DEVNULL)
        anchored = [outcome(out / f"seed-{s}" / "spinerank") for s in SEEDS]
        comparison = json.loads((out / "comparison.json").read_text())
        name = f"spinerank, anchor {weight:g}"
        result["anchors"][f"{weight:g}"] = {
            "spread": score_spread(anchored, scale), "methods": comparison["methods"],
            "against_ce": comparison["paired"]["methods"]["spinerank"]["mean"],
            "against_plain": paired_differences({"spinerank": plain, name: anchored}, "spinerank")["methods"][name]}
    seconds = time.perf_counter() - started
    record = {"name": "anchor", "command": "; ".join(commands), "seconds": round(seconds, 1),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": {**info, "load_average_after": list(os.getloadavg())}, "result": result}
    text = json.dumps(record, indent=2).replace(str(work), "DIR")
    (RESULTS / "demo-anchor.json").write_text(text + "\n")
    print(f"== anchor: {seconds / 60:.1f} min -> benchmarks/results/demo-anchor.json", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=pathlib.Path, default=ROOT / "demo-results",
                        help="scratch folder for the runs (recreated)")
    names = ["comparison", "comparison-all", "ablation-heads", "ablation-thresholds", "seeds", "anchor"]
    parser.add_argument("--only", nargs="+", choices=names, default=names)
    args = parser.parse_args(argv)
    work = args.work
    if work.exists() and "comparison-all" in args.only:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    quiet = ["--quiet"]
    if "comparison" in args.only:
        shutil.rmtree(work / "default", ignore_errors=True)
        run("comparison", ["demo", "--out", str(work / "default"), *quiet],
            work / "default" / "compare" / "comparison.json", work)
    if "comparison-all" in args.only:
        run("comparison-all", ["demo", "--out", str(work / "all"), "--all-methods", *quiet],
            work / "all" / "compare" / "comparison.json", work)
    if "ablation-heads" in args.only:
        shutil.rmtree(work / "heads", ignore_errors=True)
        run("ablation-heads", ["ablate", "--what", "heads", "--data", str(work / "all" / "cohort"), "--out",
                               str(work / "heads"), "--preset", "tiny", "--seed", "0", *quiet],
            work / "heads" / "ablation.json", work)
    if "ablation-thresholds" in args.only:
        out = work / "thresholds"
        shutil.rmtree(out, ignore_errors=True)
        run("ablation-thresholds", ["ablate", "--what", "thresholds", "--run",
                                    str(work / "all" / "compare" / "spinerank"), "--out", str(out), *quiet],
            out / "ablation.json", work)
    if "seeds" in args.only:
        cohort = work / "seeds" / "cohort"
        shutil.rmtree(work / "seeds" / "compare", ignore_errors=True)
        if not (cohort / "labels.csv").exists():
            subprocess.run(SPINERANK + ["synth", "--out", str(cohort), "--subjects", "200", "--seed", "0", *quiet],
                           check=True, cwd=RESULTS.parent)
        run("seeds", ["compare", "--data", str(cohort), "--out", str(work / "seeds" / "compare"), "--methods",
                      *SEED_METHODS, "--seeds", *SEEDS, "--preset", "tiny", *quiet],
            work / "seeds" / "compare" / "comparison.json", work)
    if "anchor" in args.only:
        anchor_runs(work)


if __name__ == "__main__":
    main()
