import os
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Benchmark the installed package, never the source tree `python -m pytest` puts on sys.path.
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT]
os.environ.setdefault("SPINERANK_EXT_REQUIRE_COMPILED", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".torchinductor"))

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
