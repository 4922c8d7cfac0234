"""The docs a clone has: README links docs/api.md (anchors that exist), quotes only figures that
docs/benchmark.md holds, and no doc names a machine's paths."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
DOCS = {
    path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
}


def _anchor(heading: str) -> str:
    # GitHub's rule: lower case, punctuation other than - and _ dropped, spaces to -.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_the_repository_copy_of_the_contract() -> None:
    assert "../shared" not in README
    assert "](docs/api.md)" in README


def test_readme_anchors_into_api_md_exist() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in api.splitlines() if line.startswith("#")}
    linked = set(re.findall(r"\]\(docs/api\.md#([^)]+)\)", README))
    assert linked, "README links no section of docs/api.md"
    assert linked <= anchors, sorted(linked - anchors)


def test_readme_benchmark_figures_come_from_benchmark_md() -> None:
    section = README[README.index("## Benchmark") :]
    section = section[: section.index("\n## ", 1)]
    benchmark = (ROOT / "docs" / "benchmark.md").read_text()
    for figure in re.findall(r"\b\d[\d,]*\.\d+x|\b\d{1,3}(?:,\d{3})+\b", section):
        assert figure in benchmark, f"README quotes {figure}, which docs/benchmark.md does not hold"


def test_no_machine_paths_in_docs() -> None:
    for path, text in DOCS.items():
        for pattern in (r"/work/", r"/home/\w", r"/tmp/container-check", r"/opt/pypi"):
            assert not re.search(pattern, text), f"{path.name} names a machine path ({pattern})"


def test_settings_tables_are_rendered_from_the_settings() -> None:
    from service.settings_table import stale_documents

    assert stale_documents() == [], "a settings table is stale: run python3 dev.py docs"


def test_every_embed_variable_the_docs_name_exists() -> None:
    from service.settings import ENV_PREFIX, ServiceSettings

    known = {ENV_PREFIX + name.upper() for name in ServiceSettings.model_fields}
    texts = {**DOCS, **{p: p.read_text() for p in (ROOT / "deploy").rglob("*.y*ml")}}
    for path, text in texts.items():
        # EMBED_LOCUST_* configure the load test, not the service.
        named = set(re.findall(r"\bEMBED_(?!LOCUST_)[A-Z0-9_]*[A-Z0-9]\b", text))
        assert named <= known, f"{path.relative_to(ROOT)} names unknown {sorted(named - known)}"
