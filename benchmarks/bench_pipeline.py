"""The input pipeline alone, and a whole CPU training step with its breakdown.

1. Volumes per second into a tensor, batches of 32, at the paper's volume shape
   (15 x 192 x 320) and the tiny preset's (10 x 48 x 80): decoded from .nii.gz,
   from .npy, and gathered from the decoded cache (volume_cache.py), with the
   files in the page cache (a second pass), in the main process.
2. The tiny preset's training step on the CPU (batch 16, phase 2: ranking loss),
   split into waiting for data, augmentation, forward, loss, backward and the
   optimizer step, with the cache.

Writes benchmarks/results/pipeline-cpu.json, rendered in docs/pipeline.md
(render_table.py --readme docs/pipeline.md).

    python benchmarks/bench_pipeline.py [--volumes 96]
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

import nibabel
import numpy as np
import torch
from machine_info import cpu_model

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SHAPES = {"paper": (15, 192, 320), "tiny": (10, 48, 80)}  # (D, H, W)
BATCH = 32


def write_dataset(folder: pathlib.Path, shape_dhw, count: int, suffix: str) -> pathlib.Path:
    """``count`` volumes (H, W, D) like normalised crops: smooth structure plus noise."""
    from spinerank.tasks import TaskTable

    d, h, w = shape_dhw
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = TaskTable().names
    lines = ["ivd_id,subject_id,level,sequence,centre," + ",".join(names)]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    for i in range(count):
        base = np.exp(-((yy * 3) ** 2) - (xx * 1.5) ** 2)[:, :, None] * rng.uniform(0.5, 2)
        volume = (base + 0.3 * rng.standard_normal((h, w, d))).astype(np.float32)
        path = folder / "volumes" / f"d{i:04d}_T2{suffix}"
        if suffix == ".npy":
            np.save(path, volume)
        else:
            nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), str(path))
        lines.append(f"d{i:04d},s{i},L4/L5,T2,c0," + ",".join("0" for _ in names))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def volumes_per_second(folder, shape_dhw, cached: bool) -> dict:
    from spinerank.data import DiscDataset, loader, read_labels, volume_cache
    from spinerank.tasks import TaskTable

    rows = read_labels(folder, TaskTable())
    build = None
    cache = None
    if cached:
        start = time.perf_counter()
        cache = volume_cache(folder, rows, shape_dhw, progress=False)
        build = time.perf_counter() - start
    dataset = DiscDataset(folder, rows, TaskTable(), shape_dhw, mode="eval", cache=cache)
    timings = []
    for _ in range(3):  # the first pass warms the page cache
        start = time.perf_counter()
        n = sum(v.shape[0] for v, _ in loader(dataset, BATCH))
        timings.append(time.perf_counter() - start)
    best = min(timings[1:])
    return {"volumes": n, "seconds": round(best, 4), "volumes_per_s": round(n / best, 1),
            **({"build_seconds": round(build, 2)} if build is not None else {})}


def training_step_breakdown(tmp: pathlib.Path, steps: int = 12) -> dict:
    """Mean milliseconds per phase-2 step of the tiny preset, by part."""
    from spinerank import config as config_lib
    from spinerank.augmentation import swap_flipped
    from spinerank.synth import synthesize
    from spinerank.train import Trainer

    cohort = tmp / "cohort"
    synthesize(cohort, subjects=60, seed=0, progress=False, workers=1)
    config = config_lib.resolve("tiny", None, data=str(cohort), out=str(tmp / "run"), progress=False)
    trainer = Trainer(config)
    c = trainer.config
    sampler = trainer.dist.sampler(trainer.train_set, 0)
    trainer.train_sampler.set_epoch(0, sampler)
    from spinerank.data import loader

    batches = loader(trainer.train_set, c.batch_size, sampler=trainer.train_sampler, num_workers=trainer.num_workers)
    optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    parts = {k: 0.0 for k in ("data", "augmentation", "forward", "loss", "backward", "optimizer")}
    done = 0
    trainer.model.train()
    while done < steps:
        it = iter(batches)
        while done < steps:
            t0 = time.perf_counter()
            try:
                volumes, grades = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            volumes, flipped = trainer.augment(volumes, generator)
            grades = swap_flipped(grades, flipped, trainer.swap)
            t2 = time.perf_counter()
            out = trainer.model(volumes)
            t3 = time.perf_counter()
            loss = trainer._loss(2, out, grades)
            t4 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t5 = time.perf_counter()
            optimizer.step()
            t6 = time.perf_counter()
            if done > 1:  # the first steps warm up allocators and threads
                for key, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6))):
                    parts[key] += b - a
            done += 1
    measured = steps - 2
    total = sum(parts.values())
    return {"preset": "tiny", "batch_size": c.batch_size, "input_shape": list(c.input_shape), "steps": measured,
            "num_workers": trainer.num_workers,
            "ms": {k: round(1000 * v / measured, 2) for k, v in parts.items()},
            "step_ms": round(1000 * total / measured, 2), "data_share": round(parts["data"] / total, 4)}


def main(volumes: int) -> dict:
    load = os.getloadavg()
    pipeline = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, shape in SHAPES.items():
            count = volumes if name == "paper" else 4 * volumes
            results = {}
            for suffix in (".nii.gz", ".npy"):
                folder = write_dataset(tmp / f"{name}{suffix}", shape, count, suffix)
                results[suffix.lstrip(".")] = volumes_per_second(folder, shape, cached=False)
                if suffix == ".nii.gz":
                    results["cache"] = volumes_per_second(folder, shape, cached=True)
            cache_file = next((tmp / f"{name}.nii.gz" / ".cache").glob("*.npy"))
            pipeline[name] = {"shape_dhw": list(shape), "batch": BATCH, **results,
                              "cache_bytes_per_volume": cache_file.stat().st_size // count}
        step = training_step_breakdown(tmp)
    paper_bytes = pipeline["paper"]["cache_bytes_per_volume"]
    return {
        "command": f"python benchmarks/bench_pipeline.py --volumes {volumes}",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_before": [round(v, 2) for v in load]},
        "pipeline": pipeline, "training_step": step,
        "spider_cache_gb": round(3000 * paper_bytes / 1e9, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=96, help="volumes of the paper's shape (4x as many tiny)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "pipeline-cpu.json")
    args = parser.parse_args()
    result = main(args.volumes)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
