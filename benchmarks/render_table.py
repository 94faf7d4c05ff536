"""Render a pytest-benchmark JSON file as the Markdown table of the README.

    python benchmarks/render_table.py benchmarks/results/cpu-pairwise_rank_loss.json

One row per batch size: the median time of each implementation and how many
times slower than the fused op each baseline is.
"""
import json
import sys
from collections import defaultdict


def render(path):
    data = json.load(open(path))
    machine = data["machine_info"]
    medians = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        medians[info["B"]][info["impl"]] = bench["stats"]["median"]
    baselines = [i for i in ("reference", "reference_compiled") if any(i in m for m in medians.values())]
    lines = [
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores "
        f"({machine.get('torch_threads', '?')} torch threads), torch {machine.get('torch', '?')}, "
        f"Python {machine.get('python_version', '?')}; {data['datetime'][:10]}. Median of "
        f"pytest-benchmark rounds, forward + backward, T = 11, all pairs, float32.",
        "",
        "| B | fused | " + " | ".join(f"{b} | {b} / fused" for b in baselines) + " |",
        "|---:|---:|" + "---:|---:|" * len(baselines),
    ]

    def fmt(seconds):
        return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"

    for B in sorted(medians):
        row = medians[B]
        cells = [str(B), fmt(row["fused"])]
        for b in baselines:
            cells += [fmt(row[b]), f"{row[b] / row['fused']:.1f}×"] if b in row else ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(render(sys.argv[1]))
