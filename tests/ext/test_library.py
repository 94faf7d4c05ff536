"""The compiled library: loading it, the fallback to the reference, the torch
it was built for; the CUDA build options; the CUDA library on a GPU."""
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import spinerank_ext
import spinerank_ext as se
from spinerank_ext import _build_info, _library

from conftest import CUDA_TESTS, cuda_only


def run_python(code, env_extra):
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd="/")


class TestLoading:
    """Loading the compiled library and the fallback to the reference."""

    def test_compiled_ops_are_loaded(self):
        assert spinerank_ext.has_compiled_ops()
        assert hasattr(torch.ops.spinerank_ext, "pairwise_rank_loss")

    def test_version_mismatch_is_reported_with_both_versions(self, monkeypatch):
        from spinerank_ext import _build_info

        monkeypatch.setattr(_build_info, "TORCH_VERSION", "1.0.0")
        with pytest.raises(_library.CompiledOpsUnavailable, match=r"built against torch 1.0.0 but torch .* is running"):
            _library._load()

    def test_missing_library_falls_back_with_a_warning_or_raises_when_required(self, tmp_path):
        # A copy of the Python package without the compiled library.
        import shutil

        pkg = tmp_path / "spinerank_ext"
        shutil.copytree(spinerank_ext.__path__[0], pkg, ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
        code = """
            import warnings, torch
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                import spinerank_ext as se
            assert not se.has_compiled_ops()
            assert any("Falling back to the pure-PyTorch reference" in str(w.message) for w in caught)
            s = torch.rand(6, 2, requires_grad=True)
            y = torch.randint(0, 4, (6, 2))
            loss = se.PairwiseRankLoss(4)(s, y)
            loss.backward()
            assert torch.allclose(loss, se.reference.pairwise_rank_loss(s, y, 4))
            mined = [se.PairwiseRankLoss(4, max_pairs=5, generator=3) for _ in range(2)]
            assert torch.equal(mined[0](s, y), mined[1](s, y))  # int seeds reproducible
            assert int(mined[0].mining_step) == 1
            print("fallback ok")
        """
        out = run_python(code, {"PYTHONPATH": str(tmp_path), "SPINERANK_EXT_REQUIRE_COMPILED": "0"})
        assert out.returncode == 0, out.stderr
        assert "fallback ok" in out.stdout
        out = run_python("import spinerank_ext", {"PYTHONPATH": str(tmp_path), "SPINERANK_EXT_REQUIRE_COMPILED": "1"})
        # The venv's installed package has the library: the message names the copy that hides it and what to do.
        assert out.returncode != 0 and f"this is the source tree {pkg}, which has no compiled library" in out.stderr
        assert "pip install --no-build-isolation -e ." in out.stderr

    def test_wheel_requires_the_torch_it_was_built_against(self):
        from importlib import metadata

        from spinerank_ext import _build_info

        running = torch.__version__.split("+", 1)[0]
        assert _build_info.TORCH_VERSION == running
        assert f"torch=={running}" in metadata.requires("spinerank_ext")


# ---------------------------------------------------------------------------
# Build options

ROOT = pathlib.Path(__file__).resolve().parents[2]
needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


def arch_list(value):
    run = subprocess.run(["cmake", f"-DLIST={value}", "-P", str(ROOT / "tests/cmake/arch_list.cmake")],
                         capture_output=True, text=True)
    return run.returncode, run.stderr.strip()


class TestBuildConfig:
    """The CUDA build options: TORCH_CUDA_ARCH_LIST parsing, SPINERANK_CUDA values, what was built."""

    @needs_cmake
    @pytest.mark.parametrize("value,expected", [
        ("9.0", "90-real"),
        ("8.0 8.6;9.0+PTX", "80-real;86-real;90-real;90-virtual"),
        ("7.5;8.9;10.0;12.0+PTX", "75-real;89-real;100-real;120-real;120-virtual"),
        ("9.0a", "90a-real"),
    ])
    def test_torch_cuda_arch_list_becomes_cmake_architectures(self, value, expected):
        assert arch_list(value) == (0, expected)

    @needs_cmake
    def test_unreadable_arch_list_is_an_error(self):
        code, err = arch_list("sm_90")
        assert code != 0 and "TORCH_CUDA_ARCH_LIST: cannot read 'sm_90'" in err

    @needs_cmake
    def test_unknown_cuda_mode_is_an_error(self, tmp_path):
        run = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path), "-DSPINERANK_CUDA=MAYBE"],
                             capture_output=True, text=True)
        assert run.returncode != 0
        assert "SPINERANK_CUDA must be AUTO, OFF, CHECK or ON, got 'MAYBE'" in run.stderr

    def test_auto_builds_the_cuda_backend_only_with_a_cuda_torch(self):
        if torch.version.cuda is None:
            assert _build_info.CUDA_BACKEND == "OFF"
        else:
            assert _build_info.CUDA_BACKEND in ("ON", "OFF")


class TestCuda:
    """The CUDA library on a GPU."""

    pytestmark = CUDA_TESTS

    @cuda_only
    def test_cuda_kernels_are_loaded(self):
        assert se.has_cuda_ops(), se._library.CUDA_LOAD_ERROR
