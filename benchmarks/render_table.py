"""Render a pytest-benchmark JSON file as the Markdown table of the README.

    python benchmarks/render_table.py benchmarks/results/cpu-pairwise_rank_loss.json

One row per batch size: the median time of each implementation and how many
times slower than the fused op each baseline is.
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


def render(path):
    data = json.load(open(path))
    machine = data["machine_info"]
    by_kind = defaultdict(lambda: defaultdict(dict))
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        kind = "all" if info.get("pairs", "all") == "all" else "mined"
        by_kind[kind][(info["B"], info.get("pairs", "all"))][info["impl"]] = bench["stats"]["median"]
    if machine.get("gpu"):
        head = (f"Machine: {machine['gpu']} ({machine.get('gpu_memory_gib', '?')} GiB), CUDA "
                f"{machine.get('cuda', '?')}, torch {machine.get('torch', '?')}, Python "
                f"{machine.get('python_version', '?')}; {data['datetime'][:10]}. Medians of CUDA-event "
                "timings after warm-up; forward + backward, T = 11, float32.")
        lines = [head, ""]
    else:
        lines = []
    lines = lines or [
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores "
        f"({machine.get('torch_threads', '?')} torch threads), torch {machine.get('torch', '?')}, "
        f"Python {machine.get('python_version', '?')}; {data['datetime'][:10]}. Medians of "
        "pytest-benchmark rounds; forward + backward, T = 11, float32.",
        "",
    ]
    if by_kind["all"]:
        lines += table(by_kind["all"], "All pairs:") + [""]
    if by_kind["mined"]:
        lines += table(by_kind["mined"], "Mined (max_pairs = 4 B per task, hard_fraction = 0.7):")
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(render(sys.argv[1]))
