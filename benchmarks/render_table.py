"""Render a pytest-benchmark JSON file as the Markdown table of the README.

    python benchmarks/render_table.py benchmarks/results/cpu-pairwise_rank_loss.json
    python benchmarks/render_table.py benchmarks/results/cpu-augmentation.json

Loss results: one row per batch size, the median time of each implementation
and how many times slower than the fused op each baseline is. Augmentation
results (cases with an ``op`` in extra_info): one row per op, likewise.
"""
import json
import sys
from collections import defaultdict


def fmt(seconds):
    if seconds is None:
        return "out of memory"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(baseline, fused):
    return "–" if baseline is None or fused is None else f"{baseline / fused:.1f}×"


def machine_line(data):
    """Where and how the numbers were measured: the GPU for CUDA-event timings, else the CPU."""
    machine = data["machine_info"]
    if machine.get("gpu"):
        return (f"Machine: {machine['gpu']} ({machine.get('gpu_memory_gib', '?')} GiB), CUDA "
                f"{machine.get('cuda', '?')}, torch {machine.get('torch', '?')}, Python "
                f"{machine.get('python_version', '?')}; {data['datetime'][:10]}. Medians of CUDA-event "
                "timings after warm-up")
    return (f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores "
            f"({machine.get('torch_threads', '?')} torch threads), torch {machine.get('torch', '?')}, "
            f"Python {machine.get('python_version', '?')}; {data['datetime'][:10]}. Medians of "
            "pytest-benchmark rounds")


def table(medians, title):
    baselines = [i for i in ("reference", "reference_compiled") if any(i in m for m in medians.values())]
    lines = [
        title,
        "",
        "| " + " | ".join(["B", "pairs", "fused"] + [f"{b} | {b} / fused" for b in baselines]) + " |",
        "|---:|---|---:|" + "---:|---:|" * len(baselines),
    ]
    for (B, pairs), row in sorted(medians.items()):
        cells = [str(B), pairs, fmt(row["fused"])]
        for b in baselines:
            cells += [fmt(row[b]), ratio(row[b], row["fused"])] if b in row else ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_loss(data):
    by_kind = defaultdict(lambda: defaultdict(dict))
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        kind = "all" if info.get("pairs", "all") == "all" else "mined"
        by_kind[kind][(info["B"], info.get("pairs", "all"))][info["impl"]] = bench["stats"]["median"]
    lines = [machine_line(data) + "; forward + backward, T = 11, float32.", ""]
    if by_kind["all"]:
        lines += table(by_kind["all"], "All pairs:") + [""]
    if by_kind["mined"]:
        lines += table(by_kind["mined"], "Mined (max_pairs = 4 B per task, hard_fraction = 0.7):")
    return lines


def shape(dims):
    return "(" + ", ".join(str(d) for d in dims) + ")"


def render_augmentation(data):
    rows = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["op"], shape(info["shape"]), shape(info["out_size"]))
        rows[key][info["impl"]] = bench["stats"]["median"]
    lines = [
        machine_line(data) + "; float32.",
        "",
        "| op | input | output size | fused | reference | reference / fused |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (op, in_shape, out_size), row in rows.items():
        fused, baseline = row.get("fused"), row.get("reference")
        lines.append(f"| {op} | {in_shape} | {out_size} | {fmt(fused) if 'fused' in row else '–'} | "
                     f"{fmt(baseline) if 'reference' in row else '–'} | {ratio(baseline, fused)} |")
    return lines


def render(path):
    with open(path) as f:
        data = json.load(f)
    is_augmentation = any("op" in bench["extra_info"] for bench in data["benchmarks"])
    lines = render_augmentation(data) if is_augmentation else render_loss(data)
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(render(sys.argv[1]))
