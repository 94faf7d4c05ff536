"""The README's Python examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    block = BLOCKS[index]
    if "PairwiseRankLoss(num_grades, *," in block:  # the signature listing, not a program
        pytest.skip("signature listing")
    exec(compile(block, f"README.md python block {index}", "exec"), {})
