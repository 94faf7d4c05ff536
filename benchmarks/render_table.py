"""Render benchmark JSON files as the Markdown tables of the README and docs/.

    python benchmarks/render_table.py benchmarks/results/cpu-pairwise_rank_loss.json   # print one
    python benchmarks/render_table.py --all                                           # update every page
    python benchmarks/render_table.py --readme docs/performance.md                    # update one page

Every block of a page between ``<!-- bench: FILE -->`` and ``<!-- /bench -->``
is replaced by the table of benchmarks/results/FILE, so the numbers of the
README and docs/ are always those of the committed results. ``--all`` updates
every page that holds such blocks: README.md and docs/*.md (``PAGES``).
``<!-- bench: FILE summary -->`` renders a shorter view of the same file (the
loss results: all pairs, fused against the eager reference; the README's
results summary).

Application results (``demo-*.json``, written by ``demo_results.py``): the
comparison or ablation table as the command prints it, with the command, its
time, the machine and the date.

Loss results: one table per kind of pairs (all, mined), one row per batch size,
the median time and peak extra memory of each implementation and how many times
slower than the fused op each baseline is. Augmentation and threshold-search
results (cases with an ``op`` in extra_info): one row per case. Data-parallel
results (``cpu-ddp.json``, written by ``bench_ddp.py``): that script's table.
"""
import argparse
import json
import pathlib
import re
from collections import defaultdict

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
LOSS_BASELINES = ("reference", "reference_compiled", "host_pairs", "fused_direct", "fused_sorted")


def fmt(seconds):
    if seconds is None:
        return "out of memory"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def fmt_bytes(n):
    if n is None:
        return "?"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.2f} MB"


def cell(result):
    """'time (memory)' of one case."""
    if result is None:
        return "–"
    text = fmt(result["median"])
    return text + (f" ({fmt_bytes(result['memory'])})" if "memory" in result else "")


def ratio(baseline, fused):
    if baseline is None or fused is None or baseline["median"] is None or fused["median"] is None:
        return "–"
    return f"{baseline['median'] / fused['median']:.1f}×"


def machine_line(data):
    """Where and how the numbers were measured: the GPU for CUDA-event timings, else the CPU."""
    machine = data["machine_info"]
    load = machine.get("load_average")
    # pytest-benchmark asks for the machine info when it writes the results: the
    # figure includes the benchmark's own load.
    load_text = f", 1-minute load average {load[0]:.2f} at the end of the run" if load else ""
    if machine.get("gpu") and "cpu_model" not in machine:
        return (f"Machine: {machine['gpu']} ({machine.get('gpu_memory_gib', '?')} GiB), CUDA "
                f"{machine.get('cuda', '?')}, torch {machine.get('torch', '?')}, Python "
                f"{machine.get('python_version', '?')}; {data['datetime'][:10]}. Medians of CUDA-event "
                "timings after warm-up")
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return (f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores "
            f"({machine.get('torch_threads', '?')} torch threads){gpu}, torch {machine.get('torch', '?')}, "
            f"Python {machine.get('python_version', '?')}; {data['datetime'][:10]}{load_text}. Medians of "
            "pytest-benchmark rounds; in brackets the peak extra memory of one call")


def result_of(bench):
    out = {"median": bench["stats"]["median"]}
    if bench["extra_info"].get("peak_extra_bytes") is not None:
        out["memory"] = bench["extra_info"]["peak_extra_bytes"]
    return out


def loss_kind(info):
    pairs = info.get("pairs", "all")
    if pairs == "all":
        return "All pairs:"
    max_pairs = int(pairs.split()[1])
    if max_pairs == 4 * info["B"]:
        return "Mined, max_pairs = 4 B per task, hard_fraction = 0.7:"
    return f"Mined, max_pairs = {max_pairs} per task, hard_fraction = 0.7:"


def loss_table(rows, title):
    baselines = [b for b in LOSS_BASELINES if any(b in row for row in rows.values())]
    lines = [title, "", "| " + " | ".join(["B", "device", "fused"] + [f"{b} | {b} / fused" for b in baselines]) + " |",
             "|---:|---|---:|" + "---:|---:|" * len(baselines)]
    for (B, device), row in sorted(rows.items()):
        cells = [str(B), device, cell(row.get("fused"))]
        for b in baselines:
            cells += [cell(row.get(b)), ratio(row.get(b), row.get("fused"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


#: The floor of a call, timed beside the loss (benchmarks/test_bench_pairwise_rank_loss.py).
FLOOR = "empty_autograd"


def floor_lines(data):
    """A sentence per (B, device) that has the empty autograd round trip: its
    time and how many times it the fused all-pairs call takes."""
    times = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("pairs", "all") == "all" and info["impl"] in ("fused", FLOOR):
            times[(info["B"], info.get("device", "cpu"))][info["impl"]] = bench["stats"]["median"]
    return [f"The floor at B = {B} ({device}): an empty autograd round trip on the same scores "
            f"(`scores.sum().backward()`) takes {fmt(t[FLOOR])}; the fused loss takes "
            f"{t['fused'] / t[FLOOR]:.2f}× that."
            for (B, device), t in sorted(times.items()) if FLOOR in t and "fused" in t]


def render_loss(data):
    by_kind = defaultdict(lambda: defaultdict(dict))
    machine = data["machine_info"]
    default_device = "cuda" if machine.get("gpu") and "cpu_model" not in machine else "cpu"  # bench_cuda.py
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info["impl"] == FLOOR:
            continue
        key = (info["B"], info.get("device", default_device))
        by_kind[loss_kind(info)][key][info["impl"]] = result_of(bench)
    lines = [machine_line(data) + "; forward + backward, T = 11, float32.", ""]
    for title in sorted(by_kind, key=lambda k: (k != "All pairs:", "4 B" not in k, k)):
        lines += loss_table(by_kind[title], title) + [""]
    floor = floor_lines(data)
    return lines + (floor + [""] if floor else [])


def shape(dims):
    return "(" + ", ".join(str(d) for d in dims) + ")"


def render_augmentation(data):
    rows = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        rows[(info["op"], shape(info["shape"]), shape(info["out_size"]))][info["impl"]] = result_of(bench)
    lines = [machine_line(data) + "; float32.", "",
             "| op | input | output size | fused | reference | reference / fused |", "|---|---|---|---:|---:|---:|"]
    for (op, in_shape, out_size), row in rows.items():
        lines.append(f"| {op} | {in_shape} | {out_size} | {cell(row.get('fused'))} | {cell(row.get('reference'))} | "
                     f"{ratio(row.get('reference'), row.get('fused'))} |")
    return lines


def render_thresholds(data):
    rows = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        rows[(info["n"], info["K"])][info["impl"]] = result_of(bench)
    lines = [machine_line(data) + ".", "",
             "| scores | K | vectorised | scikit-learn per candidate | scikit-learn / vectorised |",
             "|---:|---:|---:|---:|---:|"]
    for (n, K), row in sorted(rows.items()):
        lines.append(f"| {n} | {K} | {cell(row.get('vectorised'))} | {cell(row.get('sklearn'))} | "
                     f"{ratio(row.get('sklearn'), row.get('vectorised'))} |")
    return lines


def demo_line(data):
    """Where, when and how long: the caption of an application result (demo_results.py)."""
    m = data["machine"]
    minutes, seconds = divmod(round(data["seconds"]), 60)
    # Older result files lack the instruction set and the load at the end.
    isa = f"{m['cpu_capability']}, " if "cpu_capability" in m else ""
    after = m.get("load_average_after")
    load = f"{m['load_average_before'][0]:.2f} before the run" + (f", {after[0]:.2f} at its end" if after else "")
    return (f"`{data['command']}`: {minutes} min {seconds} s on {m['cpu_model']} ({isa}{m['cores']} cores, "
            f"{m['threads']} torch threads, torch {m['torch']}), finished {data['date']}; 1-minute load average "
            f"{load}.")


def render_demo(data):
    """A comparison (comparison.json) or an ablation (ablation.json), as the command prints it."""
    result = data["result"]
    if "what" in result:  # spinerank ablate
        from spinerank.ablate import ablation_markdown

        body = ablation_markdown(result).split("\n## Per task")[0].strip().splitlines()
        body = [line for line in body if not line.startswith("# ")]  # the title names a scratch folder
        while body and not body[0].strip():
            body = body[1:]
    elif "anchors" in result:  # demo_results.py's anchor experiment
        body = render_anchor(result)
    else:  # spinerank demo / compare
        from spinerank.compare import paired_markdown, per_task_markdown, scope_line, table_lines

        tta = "with TTA" if result["tta"] else "without TTA"
        seeds = result.get("seeds")
        if seeds:
            body = [f"{scope_line(result)}, {tta}; seeds {', '.join(map(str, seeds))}.", ""]
        else:
            body = [f"{scope_line(result)}, {tta}; mean ± std over the tasks.", ""]
        if result.get("paired"):
            body += [line.replace("## ", "#### ", 1) if line.startswith("## ") else line
                     for line in paired_markdown(result["paired"])]
            body += ["#### Each method: " + ("mean ± std over seeds of each run's mean over tasks" if seeds
                                             else "mean ± std over tasks"), ""]
        body += table_lines(result)
        if result.get("paired") and seeds:
            body += [""] + [line.replace("## ", "#### ", 1) if line.startswith("## ") else line
                            for line in per_task_markdown(result["paired"])]
    return [demo_line(data), "", *body]


def render_anchor(result):
    """SpineRankNet with the anchor term at each weight against the plain runs (demo_results.py anchor)."""
    from spinerank.compare import PAIRED_TITLES, difference_cell

    keys = ("qwk", "mae", "balanced_accuracy", "latent_spearman_within_grade")
    seeds = ", ".join(map(str, result["seeds"]))
    plain = result["plain"]["spread"]
    lines = [f"Seeds {seeds}; each weight's runs start phase 2 from the same CE phase 1 as the plain SpineRankNet "
             "runs of that seed. Score range: the 5th–95th percentile range of the test scores as a fraction of "
             "[0, S], mean over tasks and seeds. Differences: anchored − plain SpineRankNet, averaged over seeds, "
             "95 % paired-bootstrap intervals over the test discs (bold: the interval excludes 0).", "",
             "| anchor weight | score range used | highest score | " + " | ".join(
                 f"Δ {PAIRED_TITLES[k]}" for k in keys) + " |", "|---|---|---|" + "---|" * len(keys),
             f"| 0 (plain) | {plain['range_fraction']:.0%} | {plain['max_score']:.2f} | "
             + " | ".join("–" for _ in keys) + " |"]
    for weight, entry in result["anchors"].items():
        diffs = entry["against_plain"]["mean"]
        lines.append(f"| {weight} | {entry['spread']['range_fraction']:.0%} | {entry['spread']['max_score']:.2f} | "
                     + " | ".join(difference_cell(diffs[k]) if k in diffs else "–" for k in keys) + " |")
    return lines


def render_import(data):
    """bench_import.py: seconds per series of a SPIDER import, and the whole dataset's estimate."""
    m, ph, crop = data["machine"], data["phantoms"], data["crop"]
    lines = [f"`{data['command']}` on {m['cpu_model']} ({m['cores']} cores, torch {m['torch']}), {data['date']}; "
             f"1-minute load average {m['load_average_before'][0]:.2f} before the run. {ph['series']} phantom "
             f"series of {ph['patients']} patients in SPIDER's layout at {ph['in_plane_mm']:g} mm in-plane "
             f"(median {ph['median_series_voxels'] / 1e6:.1f} M voxels a series), cut into "
             f"{' × '.join(map(str, crop['shape_hwd']))} crops.", "",
             "| workers | series | crops | seconds | seconds per series |", "|---|---|---|---|---|"]
    for run in data["runs"]:
        lines.append(f"| {run['workers']} | {run['series']} | {run['volumes']} | {run['seconds']:.1f} | "
                     f"{run['seconds_per_series']:.2f} |")
    est = data["estimate"]
    lines += ["", f"Estimate for SPIDER's {est['series']} series with {est['workers']} workers on this machine: "
              f"about {est['minutes']:g} minutes (the seconds per series above times {est['series']}; real series "
              "hold 15–24 slices of up to 512 × 512 voxels, the 41 SPACE series 120)."]
    return lines


def render_pipeline(data):
    """bench_pipeline.py: volumes/s of the input pipeline, and a CPU training step by part."""
    m = data["machine"]
    lines = [f"`{data['command']}` on {m['cpu_model']} ({m['cores']} cores, {m['threads']} torch threads, torch "
             f"{m['torch']}), {data['date']}; 1-minute load average {m['load_average_before'][0]:.2f} before the "
             "run. Volumes per second into a float32 tensor, batches of "
             f"{next(iter(data['pipeline'].values()))['batch']}, main process, files in the page cache.", "",
             "| volume (D × H × W) | from .nii.gz | from .npy | from the cache | cache build | cache per volume |",
             "|---|---|---|---|---|---|"]
    for name, r in data["pipeline"].items():
        lines.append(f"| {name} {' × '.join(map(str, r['shape_dhw']))} | {r['nii.gz']['volumes_per_s']:,.0f} | "
                     f"{r['npy']['volumes_per_s']:,.0f} | {r['cache']['volumes_per_s']:,.0f} | "
                     f"{r['cache']['build_seconds']:.1f} s for {r['cache']['volumes']} | "
                     f"{fmt_bytes(r['cache_bytes_per_volume'])} |")
    s = data["training_step"]
    parts = " | ".join(f"{v:.1f} ms ({v / s['step_ms']:.0%})" for v in s["ms"].values())
    lines += ["", f"A training step of the {s['preset']} preset on the CPU (batch {s['batch_size']}, input "
              f"{' × '.join(map(str, s['input_shape']))}, phase 2, {s['num_workers']} DataLoader workers), mean of "
              f"{s['steps']} steps:", "",
              "| step | " + " | ".join(s["ms"]) + " |", "|---" * (len(s["ms"]) + 1) + "|",
              f"| {s['step_ms']:.1f} ms | {parts} |", "",
              f"A SPIDER-size dataset (about 3,000 disc crops at the paper's shape) takes "
              f"{data['spider_cache_gb']:g} GB of cache."]
    return lines


def render_loss_summary(data):
    """The README's view of the loss results: all pairs, fused against the eager reference."""
    rows = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("pairs", "all") == "all" and info["impl"] in ("fused", "reference"):
            rows.setdefault(info["B"], {})[info["impl"]] = result_of(bench)
    lines = [machine_line(data) + "; forward + backward over all pairs, T = 11, float32.", "",
             "| B | fused | reference | reference / fused |", "|---:|---:|---:|---:|"]
    for B, row in sorted(rows.items()):
        lines.append(f"| {B} | {cell(row.get('fused'))} | {cell(row.get('reference'))} | "
                     f"{ratio(row.get('reference'), row.get('fused'))} |")
    floor = floor_lines(data)
    return lines + ([""] + floor if floor else [])


def render_ddp(data):
    """bench_ddp.py's table (1 vs 2 processes on the CPU, local vs global pairs)."""
    from bench_ddp import table

    return table(data)


VIEWS = {"summary": render_loss_summary}


def render(path, view=None):
    with open(path) as f:
        data = json.load(f)
    if view is not None:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r} of {path}; views: {', '.join(VIEWS)}")
        lines = VIEWS[view](data)
        if not any("peak_extra_bytes" in bench["extra_info"] for bench in data["benchmarks"]):
            lines[0] = lines[0].replace("; in brackets the peak extra memory of one call", "")
        return "\n".join(lines).rstrip()
    if "results" in data and "load_before" in data:
        return render_ddp(data).strip()
    if "pipeline" in data and "training_step" in data:
        return "\n".join(render_pipeline(data)).strip()
    if "phantoms" in data and "estimate" in data:
        return "\n".join(render_import(data)).strip()
    if "result" in data and "command" in data:
        return "\n".join(render_demo(data)).strip()
    ops = {bench["extra_info"].get("op") for bench in data["benchmarks"]}
    if "fit_thresholds" in ops:
        lines = render_thresholds(data)
    elif ops - {None}:
        lines = render_augmentation(data)
    else:
        lines = render_loss(data)
    if not any("peak_extra_bytes" in bench["extra_info"] for bench in data["benchmarks"]):
        lines[0] = lines[0].replace("; in brackets the peak extra memory of one call", "")
    return "\n".join(lines).rstrip()


BLOCK = re.compile(r"(<!-- bench: (?P<file>[\w.-]+)(?: (?P<view>[\w-]+))? -->\n).*?(?P<close><!-- /bench -->)", re.S)


def pages(root=ROOT):
    """Every Markdown page that holds bench blocks: README.md, then docs/*.md."""
    candidates = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [page for page in candidates if page.exists() and BLOCK.search(page.read_text())]


def update_readme(readme):
    """Re-renders the bench blocks of one page; returns how many it holds."""
    text = readme.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + render(RESULTS / m.group("file"), m.group("view")) + "\n"
                    + m.group("close"), text)
    readme.write_text(new)
    return len(BLOCK.findall(text))


def update_all(root=ROOT):
    """Re-renders the bench blocks of every page; returns {page: number of blocks}."""
    return {page: update_readme(page) for page in pages(root)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", help="a results file to print")
    parser.add_argument("--readme", type=pathlib.Path, help="update the bench blocks of this Markdown file "
                        "(README.md, docs/performance.md, ...)")
    parser.add_argument("--all", action="store_true", help="update the bench blocks of every page that holds "
                        "them (README.md, docs/*.md)")
    args = parser.parse_args()
    if args.all:
        for page, count in update_all().items():
            print(f"updated {count} tables in {page.relative_to(ROOT)}")
    elif args.readme:
        print(f"updated {update_readme(args.readme)} tables in {args.readme}")
    elif args.json:
        print(render(args.json))
    else:
        parser.error("give a JSON file, --readme FILE or --all")
