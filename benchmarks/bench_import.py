"""How long ``spinerank import spider`` takes: per series on SPIDER-layout phantoms
at scanner resolution, one and two worker processes, and the estimate for the
whole dataset (447 series). Writes benchmarks/results/import-spider.json, which
docs/real-data.md renders (render_table.py --readme docs/real-data.md).

    python benchmarks/bench_import.py [--patients 4]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import tempfile
import time

import numpy as np
import torch
from machine_info import cpu_model

from spinerank.importers import common, geometry, spider, spider_phantom

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
#: SPIDER's series (DATASETS.md §1.1): 196 t1, 210 t2, 41 t2_SPACE.
SPIDER_SERIES = 447
#: Scanner-like in-plane spacing of the phantoms (SPIDER's median t1 pixel: 0.625 mm).
IN_PLANE_MM = 0.6


def series_voxels(root: pathlib.Path) -> list[int]:
    return [int(np.prod(common.read_image(p).array.shape)) for p in sorted((root / "images").glob("*.mha"))]


def timed_import(src, out, workers: int) -> dict:
    start = time.perf_counter()
    summary = spider.import_spider(src, out, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return {"workers": workers, "seconds": round(seconds, 2), "series": summary["counts"]["series_imported"],
            "volumes": summary["counts"]["volumes"],
            "seconds_per_series": round(seconds / summary["counts"]["series_imported"], 3),
            "median_series_seconds": summary["seconds"]["per_series_median"]}


def main(patients: int) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        src = tmp / "SPIDER"
        spider_phantom.write_spider(src, patients=patients, seed=0, in_plane_mm=IN_PLANE_MM)
        voxels = series_voxels(src)
        runs = [timed_import(src, tmp / f"out{w}", w) for w in (1, 2)]
    per_series = runs[1]["seconds"] / runs[1]["series"]
    return {
        "command": f"python benchmarks/bench_import.py --patients {patients}",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_before": [round(v, 2) for v in load_before]},
        "phantoms": {"patients": patients, "series": len(voxels), "in_plane_mm": IN_PLANE_MM,
                     "median_series_voxels": int(np.median(voxels))},
        "crop": geometry.CropGrid().to_dict(),
        "runs": runs,
        "estimate": {"series": SPIDER_SERIES, "workers": 2, "minutes": round(SPIDER_SERIES * per_series / 60, 1)},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "import-spider.json")
    args = parser.parse_args()
    result = main(args.patients)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
