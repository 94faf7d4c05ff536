"""The benchmark tables of the README and docs/ are the rendering of the committed results."""
import json
import pathlib

import pytest

from render_table import BLOCK, RESULTS, ROOT, pages, render, update_all, update_readme

README = ROOT / "README.md"
PAGES = pages()

#: Where each result file is rendered (at least there; a file may be rendered on several pages).
RENDERED_ON = {
    "demo-comparison.json": "README.md",
    "cpu-pairwise_rank_loss.json": "docs/performance.md",
    "cpu-thresholds.json": "docs/performance.md",
    "cpu-augmentation.json": "docs/augmentation.md",
    "cpu-ddp.json": "docs/distributed.md",
    "demo-comparison-all.json": "docs/comparison.md",
    "demo-seeds.json": "docs/comparison.md",
    "demo-anchor.json": "docs/comparison.md",
    "demo-ablation-heads.json": "docs/training.md",
    "demo-ablation-thresholds.json": "docs/training.md",
    "import-spider.json": "docs/real-data.md",
    "pipeline-cpu.json": "docs/pipeline.md",
}


def blocks(page):
    return [(m.group("file"), m.group("view")) for m in BLOCK.finditer(page.read_text())]


def test_every_page_with_blocks_is_found():
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert set(RENDERED_ON.values()) <= names
    assert all(p == README or p.parent == ROOT / "docs" for p in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_tables_match_the_committed_results(tmp_path, page):
    text = page.read_text()
    found = blocks(page)
    assert found and all((RESULTS / name).exists() for name, _ in found)
    copy = tmp_path / page.name
    copy.write_text(text)
    assert update_readme(copy) == len(found)
    assert copy.read_text() == text, f"the tables of {page.relative_to(ROOT)} are stale: run " \
        "python benchmarks/render_table.py --all"


@pytest.mark.parametrize("result, page", sorted(RENDERED_ON.items()))
def test_each_result_is_rendered_where_it_belongs(result, page):
    assert result in [name for name, _ in blocks(ROOT / page)]


def test_readme_results_summary():
    assert blocks(README) == [("demo-comparison.json", None), ("cpu-pairwise_rank_loss.json", "summary"),
                              ("cpu-augmentation.json", None)]


def test_update_all_renders_every_page(tmp_path):
    (tmp_path / "docs").mkdir()
    stale = "<!-- bench: cpu-thresholds.json -->\nold numbers\n<!-- /bench -->\n"
    (tmp_path / "README.md").write_text("# x\n\n" + stale)
    (tmp_path / "docs" / "a.md").write_text(stale + "\n" + stale.replace("cpu-thresholds", "demo-comparison"))
    (tmp_path / "docs" / "none.md").write_text("no blocks\n")
    counts = update_all(tmp_path)
    assert {p.name: n for p, n in counts.items()} == {"README.md": 1, "a.md": 2}
    assert "old numbers" not in (tmp_path / "README.md").read_text() + (tmp_path / "docs" / "a.md").read_text()
    assert render(RESULTS / "cpu-thresholds.json") in (tmp_path / "README.md").read_text()


def test_loss_summary_is_the_all_pairs_table_against_the_reference():
    full = render(RESULTS / "cpu-pairwise_rank_loss.json")
    summary = render(RESULTS / "cpu-pairwise_rank_loss.json", "summary")
    data = json.loads((RESULTS / "cpu-pairwise_rank_loss.json").read_text())
    all_pairs = {b["extra_info"]["B"] for b in data["benchmarks"] if b["extra_info"].get("pairs", "all") == "all"}
    rows = [line.strip("| ").split(" | ") for line in summary.splitlines() if line[:2] == "| " and line[2].isdigit()]
    assert [row[0] for row in rows] == [str(b) for b in sorted(all_pairs)]
    for B, fused, reference, ratio in rows:  # the cells of the full table's all-pairs rows
        assert f"| {B} | cpu | {fused} | {reference} | {ratio} |" in full
    with pytest.raises(ValueError, match="unknown view"):
        render(RESULTS / "cpu-pairwise_rank_loss.json", "brief")


def test_ddp_table_is_the_benchmark_scripts():
    from bench_ddp import table

    data = json.loads((RESULTS / "cpu-ddp.json").read_text())
    assert render(RESULTS / "cpu-ddp.json") == table(data).strip()
    assert "| 2 processes x batch 16, global pairs |" in render(RESULTS / "cpu-ddp.json")


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


def test_the_floor_line_is_the_ratio_of_the_two_medians():
    from render_table import floor_lines

    def bench(impl, B, median, pairs="all"):
        return {"extra_info": {"impl": impl, "B": B, "device": "cpu", "pairs": pairs}, "stats": {"median": median}}

    data = {"benchmarks": [bench("fused", 32, 30e-6), bench("empty_autograd", 32, 20e-6),
                           bench("fused", 128, 65e-6), bench("fused", 32, 60e-6, pairs="mined 128")]}
    assert floor_lines(data) == [
        "The floor at B = 32 (cpu): an empty autograd round trip on the same scores (`scores.sum().backward()`) "
        "takes 20 µs; the fused loss takes 1.50× that."]
    assert floor_lines({"benchmarks": [bench("fused", 32, 30e-6)]}) == []
