import os
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Benchmark the installed package, never the source tree `python -m pytest` puts on sys.path.
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT]
os.environ.setdefault("SPINERANK_EXT_REQUIRE_COMPILED", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".torchinductor"))

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_benchmark_update_machine_info(config, machine_info):
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    machine_info.update(
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        cpu_model=cpu,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )


def drop_raw_timings(output_json):
    """Keep the statistics of each case, not every round's time (tens of thousands of lines)."""
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    drop_raw_timings(output_json)


# ---------------------------------------------------------------------------
# The default run (`pytest benchmarks`): small and medium cases, a verdict at the end.
# `--bench-large` (make bench) adds the large ones and measures every case's memory.


def pytest_addoption(parser):
    parser.addoption("--bench-large", action="store_true", default=False,
                     help="also the large cases (B = 4096 eager, 65 536, the 5 GB reference) and every case's "
                     "peak memory (make bench)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a case run only with --bench-large (minutes, GBs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench-large"):
        return
    skip = pytest.mark.skip(reason="a large case: run with --bench-large (make bench)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


#: The implementation each baseline is compared with, per benchmark file's naming.
OURS = ("fused", "vectorised")
#: Not a baseline but the floor of a call (benchmarks/test_bench_pairwise_rank_loss.py).
FLOOR = "empty_autograd"


def ratio_rows(benchmarks):
    """[(case, {baseline: times slower than ours})] from pytest-benchmark's results."""
    groups: dict[str, dict[str, float]] = {}
    for bench in benchmarks:
        median = getattr(bench.stats, "median", None) if bench.stats else None
        impl = bench.extra_info.get("impl")
        if median and impl:
            groups.setdefault(bench.group or bench.name, {})[impl] = median
    rows = []
    for case, medians in groups.items():
        ours = next((medians[o] for o in OURS if o in medians), None)
        if ours:
            rows.append((case, {impl: m / ours for impl, m in medians.items() if impl not in OURS + (FLOOR,)}))
    return rows


def floor_rows(benchmarks):
    """[(case, fused median / the empty autograd round trip's median)] for the cases that have both."""
    groups: dict[str, dict[str, float]] = {}
    for bench in benchmarks:
        median = getattr(bench.stats, "median", None) if bench.stats else None
        if median and bench.extra_info.get("impl") in ("fused", FLOOR):
            groups.setdefault(bench.group or bench.name, {})[bench.extra_info["impl"]] = median
    return [(case, m["fused"] / m[FLOOR]) for case, m in groups.items() if "fused" in m and FLOOR in m]


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: the verdict ends the output
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or config.getoption("benchmark_disable", False):
        return
    rows = ratio_rows(session.benchmarks)
    if not rows:
        return
    order = ["reference", "reference_compiled", "host_pairs"]
    baselines = sorted({b for _, r in rows for b in r}, key=lambda b: (order.index(b) if b in order else 9, b))
    width = max(len(case) for case, _ in rows)
    write = terminalreporter.write_line
    terminalreporter.section("spinerank_ext: how many times slower each baseline is than the fused op (median)")
    write(f"{'case':<{width}}  " + "  ".join(f"{b:>18}" for b in baselines))
    for case, r in rows:
        write(f"{case:<{width}}  " + "  ".join(f"{(f'{r[b]:.1f}x' if b in r else '-'):>18}" for b in baselines))
    for case, times in floor_rows(session.benchmarks):
        write(f"{case}: the fused op takes {times:.2f}x an empty autograd round trip (x.sum().backward())")
    info = {}
    pytest_benchmark_update_machine_info(config, info)
    write(f"machine: {info['cpu_model']}, {info['cpu_count']} cores, {info['torch_threads']} torch threads, "
          f"torch {info['torch']}{', GPU ' + info['gpu'] if info['gpu'] else ''}; "
          f"load average {', '.join(f'{v:.2f}' for v in info['load_average'] or [])}")
