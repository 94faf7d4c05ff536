"""The shared header csrc/loss/pair_math.h on its own (it has no torch dependency)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Random123's published known-answer vectors for Philox4x32-10 (Random123 kat_vectors).
RANDOM123_KAT = [
    "6627e8d5 e169c58d bc57ac4c 9b00dbd8",
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
    "d16cfe09 94fdcceb 5001e420 24126ea1",
]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_philox_matches_random123_known_answers(tmp_path):
    exe = tmp_path / "kat"
    subprocess.run(["g++", "-std=c++17", "-O2", "-I", str(ROOT / "csrc"), str(ROOT / "tests/cpp/pair_math_kat.cpp"),
                    "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    assert out[:3] == RANDOM123_KAT


@pytest.fixture(scope="module")
def select_emulation(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    exe = tmp_path_factory.mktemp("emulation") / "select_emulation"
    subprocess.run(["g++", "-std=c++17", "-O2", "-ffp-contract=off", "-I", str(ROOT / "csrc"),
                    str(ROOT / "tests/cpp/select_emulation.cpp"), "-o", str(exe)], check=True)
    return exe


@pytest.mark.parametrize("n,K,max_pairs,hard_fraction,threads", [
    (2, 3, 1, 0.7, 512), (30, 5, 50, 0.7, 512), (30, 4, 435, 0.7, 512), (30, 4, 434, 0.5, 64),
    (45, 4, 100, 0.0, 32), (45, 4, 100, 1.0, 32), (80, 3, 900, 0.7, 64), (120, 5, 3000, 0.3, 512),
    (200, 4, 150, 0.7, 512),
    # The CPU op's other paths: Floyd's set as a hash table (many candidates,
    # few draws) and the buffered hard selection (P above mining_table_max_pairs).
    (420, 4, 12, 0.5, 512), (760, 3, 300, 0.7, 512),
])
@pytest.mark.parametrize("seed", [0, 12345])
def test_device_selection_algorithm_picks_the_cpu_pairs(select_emulation, n, K, max_pairs, hard_fraction,
                                                         threads, seed):
    # The CUDA select kernel's algorithm (radix select with ties, Floyd's draws in
    # a hash set, the index-order sweep with block scans), emulated on the CPU
    # with the kernel's own building blocks, against the CPU op.
    import torch

    import spinerank_ext as se

    g = torch.Generator().manual_seed(seed + n)
    scores = torch.round(torch.rand(n, 1, generator=g, dtype=torch.float64) * 20) / 4  # many ties
    grades = torch.randint(0, K, (n, 1), generator=g)
    expected = se.mined_pairs(scores, grades, [K], max_pairs=max_pairs, hard_fraction=hard_fraction,
                              generator=seed)[0]
    expected = expected[expected[:, 0] >= 0].tolist()
    lines = [f"{n} {K} {max_pairs} {hard_fraction!r} {seed} 0 0.5 1.5 {threads}"]
    lines += [f"{float(s)!r} {int(y)}" for s, y in zip(scores[:, 0], grades[:, 0])]
    run = subprocess.run([str(select_emulation)], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, check=True)
    got = [[int(v) for v in line.split()] for line in run.stdout.splitlines()]
    assert got == expected
