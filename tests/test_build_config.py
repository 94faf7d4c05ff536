"""The CUDA build options: TORCH_CUDA_ARCH_LIST parsing, SPINERANK_CUDA values, what was built."""
import pathlib
import shutil
import subprocess

import pytest
import torch

from spinerank_ext import _build_info

ROOT = pathlib.Path(__file__).resolve().parent.parent
needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


def arch_list(value):
    run = subprocess.run(["cmake", f"-DLIST={value}", "-P", str(ROOT / "tests/cmake/arch_list.cmake")],
                         capture_output=True, text=True)
    return run.returncode, run.stderr.strip()


@needs_cmake
@pytest.mark.parametrize("value,expected", [
    ("9.0", "90-real"),
    ("8.0 8.6;9.0+PTX", "80-real;86-real;90-real;90-virtual"),
    ("7.5;8.9;10.0;12.0+PTX", "75-real;89-real;100-real;120-real;120-virtual"),
    ("9.0a", "90a-real"),
])
def test_torch_cuda_arch_list_becomes_cmake_architectures(value, expected):
    assert arch_list(value) == (0, expected)


@needs_cmake
def test_unreadable_arch_list_is_an_error():
    code, err = arch_list("sm_90")
    assert code != 0 and "TORCH_CUDA_ARCH_LIST: cannot read 'sm_90'" in err


@needs_cmake
def test_unknown_cuda_mode_is_an_error(tmp_path):
    run = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path), "-DSPINERANK_CUDA=MAYBE"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "SPINERANK_CUDA must be AUTO, OFF, CHECK or ON, got 'MAYBE'" in run.stderr


def test_auto_builds_the_cuda_backend_only_with_a_cuda_torch():
    if torch.version.cuda is None:
        assert _build_info.CUDA_BACKEND == "OFF"
    else:
        assert _build_info.CUDA_BACKEND in ("ON", "OFF")
