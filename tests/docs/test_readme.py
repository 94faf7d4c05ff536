"""The Python examples of the README and of the API pages of docs/ run as written."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The pages whose examples are programs: the README's API tour, and the examples that moved with
# their sections into docs/ (docs/real-data.md's snippet reads a dataset that is not there).
PAGES = [README] + [ROOT / "docs" / name for name in ("loss.md", "augmentation.md", "distributed.md")]


def examples(page):
    """Every ```python block of a page except the API signature listing, which is not a program."""
    return [b for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
            if "PairwiseRankLoss(num_grades, *," not in b]


BLOCKS = [(page, index, block) for page in PAGES for index, block in enumerate(examples(page))]


def test_readme_has_examples():
    assert examples(README)


def test_docs_examples_are_where_the_api_is_described():
    # The examples moved out of the README with their sections; they must not get lost.
    assert examples(ROOT / "docs" / "loss.md") and examples(ROOT / "docs" / "augmentation.md")
    assert examples(ROOT / "docs" / "distributed.md")


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{p.relative_to(ROOT)}-{i}" for p, i, _ in BLOCKS])
def test_readme_example_runs(page, index, block):
    exec(compile(block, f"{page.relative_to(ROOT)} python block {index}", "exec"), {})
