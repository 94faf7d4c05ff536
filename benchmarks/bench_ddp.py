"""1 vs 2 processes on the CPU: a phase-2 training step of SpineRankNet with the
pairwise ranking loss, local pairs against global pairs (gloo, DDP).

    python benchmarks/bench_ddp.py      # writes benchmarks/results/cpu-ddp.json, prints the table
    python benchmarks/bench_ddp.py --table benchmarks/results/cpu-ddp.json   # the table again

docs/distributed.md shows the table of the committed results file
(render_table.py --readme docs/distributed.md, which calls ``table``).

A step is forward, loss, backward (with DDP's gradient all-reduce) and an AdamW
step on random volumes of the tiny preset's input size, T = 11 tasks of the
default table, 20% missing grades, all pairs. Its time is the slowest rank's
(the ranks start each step together after a barrier); the median over the
repeats is reported. The loss alone (forward and backward, including the
gather of global pairs) is timed the same way on the last batch's scores. Pairs per step: the loss's kept pairs, summed over the
ranks when each rank pairs only its own samples. The global batch of the W
ranks is the same data as the single process with W times the batch, so
global pairs must count exactly the pairs of that process (checked).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT]
os.environ.setdefault("SPINERANK_EXT_REQUIRE_COMPILED", "1")

TASK_KS = (5, 4, 4, 3, 4, 4, 4, 4, 4, 4, 4)
INPUT = (8, 40, 64)  # the tiny preset's crop (D, H, W)

# (name, processes, batch per process, threads per process, global_pairs). One
# thread per process, as torchrun sets it: the processes scale out over cores.
CASES = [
    ("1 process, batch 16", 1, 16, 1, False),
    ("1 process, batch 32", 1, 32, 1, False),
    ("2 processes x batch 16, local pairs", 2, 16, 1, False),
    ("2 processes x batch 16, global pairs", 2, 16, 1, True),
]


def _global_batch(step, size):
    g = torch.Generator().manual_seed(step)
    volumes = torch.randn(size, 1, *INPUT, generator=g)
    grades = torch.stack([torch.randint(0, k, (size,), generator=g) for k in TASK_KS], 1)
    grades[torch.rand(size, len(TASK_KS), generator=g) < 0.2] = -1
    return volumes, grades


def _worker(rank, world, batch, threads, global_pairs, width, warmup, repeats, init_file, out_file):
    torch.set_num_threads(threads)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                             world_size=world, timeout=datetime.timedelta(seconds=300))
    try:
        _measure(rank, world, batch, global_pairs, width, warmup, repeats, out_file)
    finally:
        if world > 1:
            gc.collect()  # DDP's reference cycles hold the group: see spinerank.distributed.session
            torch.distributed.destroy_process_group()


def _measure(rank, world, batch, global_pairs, width, warmup, repeats, out_file):
    import spinerank_ext
    from spinerank.model import SpineRankNet

    torch.manual_seed(0)
    model = SpineRankNet(list(TASK_KS), width=width)
    step_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss_fn = spinerank_ext.PairwiseRankLoss(TASK_KS, generator=0, global_pairs=global_pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, pairs = [], []
    for step in range(warmup + repeats):
        volumes, grades = _global_batch(step, world * batch)
        rows = slice(rank * batch, (rank + 1) * batch)  # rank order = the single process's order
        volumes, grades = volumes[rows], grades[rows]
        if world > 1:
            torch.distributed.barrier()
        start = time.perf_counter()
        scores = step_model(volumes)["scores"]
        loss = loss_fn(scores, grades)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds = _slowest(time.perf_counter() - start, world)
        count = torch.tensor(float(loss_fn.last_counts.sum()), dtype=torch.float64)
        if world > 1 and not global_pairs:  # every rank's own pairs
            torch.distributed.all_reduce(count)
        if step >= warmup:
            times.append(seconds)
            pairs.append(int(count))
    # The loss alone (forward and backward, with the gather), the ranks started together.
    scores = scores.detach().requires_grad_()
    loss_times = []
    for _ in range(max(repeats, 5)):
        if world > 1:
            torch.distributed.barrier()
        start = time.perf_counter()
        loss_fn(scores, grades).backward()
        loss_times.append(_slowest(time.perf_counter() - start, world))
    if rank == 0:
        pathlib.Path(out_file).write_text(json.dumps(dict(
            step_s=statistics.median(times), loss_s=statistics.median(loss_times), pairs=pairs)))


def _slowest(seconds, world):
    """The largest of the ranks' times (every rank gets it)."""
    if world == 1:
        return seconds
    value = torch.tensor(seconds, dtype=torch.float64)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return value.item()


def run_case(world, batch, threads, global_pairs, width=16, warmup=2, repeats=10, timeout=600):
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "result.json"
        args = (world, batch, threads, global_pairs, width, warmup, repeats, str(pathlib.Path(tmp) / "init"),
                str(out))
        if world == 1:  # in this process: no start-up to pay
            before = torch.get_num_threads()
            try:
                _worker(0, *args)
            finally:
                torch.set_num_threads(before)
            return json.loads(out.read_text())
        context = torch.multiprocessing.start_processes(_worker, args=args, nprocs=world, join=False,
                                                        start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world} processes did not finish within {timeout} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
        return json.loads(out.read_text())


def run(width=16, warmup=2, repeats=10, cases=CASES, rounds=1):
    """Every case ``rounds`` times, the cases interleaved (a change of the
    machine's load then hits every case alike); per case the median over the
    rounds of the rounds' medians, and their range."""
    runs = {name: [] for name, *_ in cases}
    for _ in range(rounds):
        for name, world, batch, threads, global_pairs in cases:
            runs[name].append(run_case(world, batch, threads, global_pairs, width, warmup, repeats))
    results = []
    for name, world, batch, threads, global_pairs in cases:
        step, loss = [r["step_s"] for r in runs[name]], [r["loss_s"] for r in runs[name]]
        results.append(dict(case=name, processes=world, batch_per_process=batch, threads_per_process=threads,
                            global_pairs=global_pairs, step_s=statistics.median(step), step_s_range=[min(step), max(step)],
                            loss_s=statistics.median(loss), loss_s_range=[min(loss), max(loss)],
                            pairs=runs[name][0]["pairs"]))
        assert all(r["pairs"] == runs[name][0]["pairs"] for r in runs[name])  # same data every round
    by_name = {r["case"]: r for r in results}
    # Same data, same grades: the global batch pairs exactly like one process with batch 32.
    assert by_name["2 processes x batch 16, global pairs"]["pairs"] == by_name["1 process, batch 32"]["pairs"]
    return results


def table(record) -> str:
    lines = [f"Machine: {record['machine']}; load average (1, 5, 15 min) before: {record['load_before']}, "
             f"after: {record['load_after']}; {record['date']}. {record['rounds']} interleaved rounds of "
             f"{record['repeats']} steps: median of the rounds' medians (range); SpineRankNet width "
             f"{record['width']}, input {tuple(INPUT)}, T = 11, all pairs.", "",
             "| setting | samples / step | pairs / step | step time | samples / s | loss fwd + bwd (with gather) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in record["results"]:
        samples = r["processes"] * r["batch_per_process"]
        pairs = statistics.median(r["pairs"])
        (lo, hi), (llo, lhi) = r["step_s_range"], r["loss_s_range"]
        lines.append(f"| {r['case']} | {samples} | {pairs:.0f} | {1000 * r['step_s']:.0f} ms "
                     f"({1000 * lo:.0f}–{1000 * hi:.0f}) | {samples / r['step_s']:.0f} | "
                     f"{1000 * r['loss_s']:.2f} ms ({1000 * llo:.2f}–{1000 * lhi:.2f}) |")
    return "\n".join(lines)


def _machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of the whole set of cases")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu-ddp.json"))
    p.add_argument("--table", metavar="JSON", help="print the table of an earlier run and stop")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(pathlib.Path(args.table).read_text())))
        return
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results = run(args.width, args.warmup, args.repeats, rounds=args.rounds)
    record = dict(machine=_machine(), date=datetime.date.today().isoformat(), width=args.width,
                  repeats=args.repeats, rounds=args.rounds, load_before=load_before,
                  load_after=" ".join(f"{v:.2f}" for v in os.getloadavg()), results=results)
    pathlib.Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))


if __name__ == "__main__":
    main()
