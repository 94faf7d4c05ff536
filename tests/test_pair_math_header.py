"""The shared header csrc/pair_math.h on its own (it has no torch dependency)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Random123's published known-answer vectors for Philox4x32-10 (tests/kat_vectors).
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
