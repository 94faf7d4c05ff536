"""The README's Python examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
# Every ```python block except the API signature listing, which is not a program.
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
          if "PairwiseRankLoss(num_grades, *," not in b]


def test_readme_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
