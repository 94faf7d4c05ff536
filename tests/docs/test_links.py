"""Every relative link and image of README.md and docs/*.md points to a file that
exists, and every #anchor to a heading of the page it names (GitHub's slugs)."""
import pathlib
import re
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML_ATTR = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
HTML_ANCHOR = re.compile(r"""<a\s[^>]*(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_and_headings(text: str) -> tuple[str, list[str]]:
    """The page without its fenced code blocks, and its ATX headings in order."""
    prose, headings, fence = [], [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        h = HEADING.match(line)
        if h:
            headings.append(h.group(2))
        prose.append(line)
    return "\n".join(prose), headings


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text in lower case, without
    punctuation other than '-' and '_', each space a '-'."""
    text = CODE_SPAN.sub(lambda m: m.group(0)[len(m.group(1)):-len(m.group(1))], heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    """Every anchor of a page: its headings' slugs (a repeated slug gets -1, -2, ...) and HTML anchors."""
    text = page.read_text(encoding="utf-8")
    _, headings = prose_and_headings(text)
    seen: dict[str, int] = {}
    out = set()
    for heading in headings:
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    out.update(HTML_ANCHOR.findall(text))
    return out


def links(page: pathlib.Path) -> list[str]:
    """The link and image targets of a page's prose (not of its code)."""
    prose, _ = prose_and_headings(page.read_text(encoding="utf-8"))
    prose = CODE_SPAN.sub("", prose)
    return INLINE_LINK.findall(prose) + REFERENCE_DEF.findall(prose) + HTML_ATTR.findall(prose)


def broken(page: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """What is wrong with each relative link of ``page``."""
    problems = []
    for target in links(page):
        if not target or EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = urllib.parse.unquote(path.split("?", 1)[0])
        if path.startswith("/"):
            file = root / path.lstrip("/")
        else:
            file = (page.parent / path) if path else page
        if not file.exists():
            problems.append(f"{target}: {path} does not exist")
            continue
        if anchor:
            if file.suffix.lower() != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif urllib.parse.unquote(anchor) not in anchors(file):
                problems.append(f"{target}: {file.name} has no heading with the anchor #{anchor}")
    return problems


def test_the_pages_are_found():
    names = {p.name for p in PAGES}
    assert {"README.md", "architecture.md", "development.md", "training.md", "performance.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    assert links(page) or page.name != "README.md"
    problems = broken(page)
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("heading, expected", [
    ("Quick start", "quick-start"),
    ("The loss: `PairwiseRankLoss`", "the-loss-pairwiserankloss"),
    ("pairwise_rank_loss, PairwiseRankLoss, mined_pairs", "pairwise_rank_loss-pairwiserankloss-mined_pairs"),
    ("Measured: 1 vs 2 processes on the CPU", "measured-1-vs-2-processes-on-the-cpu"),
    ("Real data: SPIDER and RSNA 2024", "real-data-spider-and-rsna-2024"),
    ("Training SpineRankNet (`spinerank`)", "training-spineranknet-spinerank"),
    ("A — B", "a--b"),
    ("Über *emphasis* and [a link](x.md)", "über-emphasis-and-a-link"),
])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_the_check_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Part one\n\n## Part one\n")
    (tmp_path / "img.png").write_bytes(b"")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n## Section\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#part-one) [ok](docs/other.md#part-one-1) [ok](#section)\n"
        "![ok](img.png) [ok](https://example.com/x.md) [ok](docs/)\n"
        "[missing file](docs/gone.md) [missing anchor](docs/other.md#part-two) [bad self](#nowhere)\n"
        "![missing image](figures/none.png)\n"
        "`[in code](nothere.md)`\n\n```bash\n[in a fence](nothere.md)\n# not a heading\n```\n")
    problems = broken(page, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["docs/gone.md", "docs/other.md#part-two", "#nowhere",
                                                  "figures/none.png"]
    assert "not-a-heading" not in anchors(page)
