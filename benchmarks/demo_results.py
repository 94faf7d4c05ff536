"""Runs the README's application results and writes them as result files.

    python benchmarks/demo_results.py [--work DIR] [--only NAME ...]

Each run is timed on its own (run it on a quiet machine) and written to
``benchmarks/results/demo-<name>.json``: the command's own JSON (comparison.json
or ablation.json) under ``result``, with the command line, wall time, machine,
torch version, thread count, load average and date. ``render_table.py --readme``
renders them into the README's ``<!-- bench: demo-*.json -->`` blocks.

- ``comparison``: ``spinerank demo`` (CE and SpineRankNet);
- ``comparison-all``: ``spinerank demo --all-methods`` (in its own folder, so
  that no run is reused and the time is the whole command's);
- ``ablation-heads``: ``spinerank ablate --what heads`` on the demo cohort
  (tiny preset, seed 0, as the demo);
- ``ablation-thresholds``: ``spinerank ablate --what thresholds`` on the
  all-methods demo's SpineRankNet run.
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
    return {"cpu_model": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=pathlib.Path, default=ROOT / "demo-results",
                        help="scratch folder for the runs (recreated)")
    names = ["comparison", "comparison-all", "ablation-heads", "ablation-thresholds"]
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


if __name__ == "__main__":
    main()
