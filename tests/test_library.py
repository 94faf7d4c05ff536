"""Loading the compiled library and the fallback to the reference."""
import subprocess
import sys
import textwrap

import pytest
import torch

import spinerank_ext
from spinerank_ext import _library


def test_compiled_ops_are_loaded():
    assert spinerank_ext.has_compiled_ops()
    assert hasattr(torch.ops.spinerank_ext, "pairwise_rank_loss")


def test_version_mismatch_is_reported_with_both_versions(monkeypatch):
    from spinerank_ext import _build_info

    monkeypatch.setattr(_build_info, "TORCH_VERSION", "1.0.0")
    with pytest.raises(_library.CompiledOpsUnavailable, match=r"built against torch 1.0.0 but torch .* is running"):
        _library._load()


def run_python(code, env_extra):
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd="/")


def test_missing_library_falls_back_with_a_warning_or_raises_when_required(tmp_path):
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


def test_wheel_requires_the_torch_it_was_built_against():
    from importlib import metadata

    from spinerank_ext import _build_info

    running = torch.__version__.split("+", 1)[0]
    assert _build_info.TORCH_VERSION == running
    assert f"torch=={running}" in metadata.requires("spinerank_ext")
