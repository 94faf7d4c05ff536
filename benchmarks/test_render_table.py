"""The README's benchmark tables are the rendering of the committed results."""
import json
import pathlib

import pytest

from render_table import BLOCK, RESULTS, render, update_readme

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tables_match_the_committed_results(tmp_path):
    text = README.read_text()
    files = [m.group("file") for m in BLOCK.finditer(text)]
    assert {"cpu-pairwise_rank_loss.json", "cpu-augmentation.json", "cpu-thresholds.json", "demo-comparison.json",
            "demo-comparison-all.json", "demo-ablation-heads.json", "demo-ablation-thresholds.json"} <= set(files)
    copy = tmp_path / "README.md"
    copy.write_text(text)
    assert update_readme(copy) == len(files)
    assert copy.read_text() == text, "README tables are stale: run python benchmarks/render_table.py --readme README.md"


@pytest.mark.parametrize("page, result", [("real-data.md", "import-spider.json"), ("pipeline.md", "pipeline-cpu.json"),
                                          ("comparison.md", "demo-seeds.json"), ("comparison.md", "demo-anchor.json")])
def test_docs_tables_match_the_committed_results(tmp_path, page, result):
    docs = README.parent / "docs" / page
    text = docs.read_text()
    files = [m.group("file") for m in BLOCK.finditer(text)]
    assert result in files
    copy = tmp_path / page
    copy.write_text(text)
    assert update_readme(copy) == len(files)
    assert copy.read_text() == text, f"docs tables are stale: run python benchmarks/render_table.py --readme " \
        f"docs/{page}"


def test_loss_table_has_memory_ratios_and_every_case():
    data = json.loads((RESULTS / "cpu-pairwise_rank_loss.json").read_text())
    table = render(RESULTS / "cpu-pairwise_rank_loss.json")
    for bench in data["benchmarks"]:
        assert f"| {bench['extra_info']['B']} | cpu |" in table
    assert "host_pairs / fused" in table and " MB)" in table and "×" in table


def test_demo_tables_name_the_command_machine_and_time():
    for name in ("demo-comparison.json", "demo-comparison-all.json", "demo-ablation-heads.json",
                 "demo-ablation-thresholds.json", "demo-seeds.json", "demo-anchor.json"):
        data = json.loads((RESULTS / name).read_text())
        table = render(RESULTS / name)
        assert table.startswith(f"`{data['command']}`: ") and data["machine"]["cpu_model"] in table
        assert "/work/" not in table  # scratch folders are no part of a result
        assert any(row in table for row in ("| ce |", "| grid |", "| mlp |", "| 0 (plain) |"))


def test_seed_comparison_leads_with_the_paired_differences():
    data = json.loads((RESULTS / "demo-seeds.json").read_text())
    table = render(RESULTS / "demo-seeds.json")
    assert table.index("Against ce: paired differences") < table.index("Each method: mean ± std over seeds")
    for method, entry in data["result"]["paired"]["methods"].items():
        qwk = entry["mean"]["qwk"]
        assert f"| {method} | {qwk['diff']:+.3f} [{qwk['ci'][0]:+.3f}, {qwk['ci'][1]:+.3f}]" in table.replace("**", "")
