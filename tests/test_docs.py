"""The documentation site builds without a warning, and every page in docs/ is reachable from its navigation."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _nav_files(node) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, list):
        return set().union(*(_nav_files(n) for n in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(_nav_files(v) for v in node.values()))
    return set()


def test_every_docs_page_is_in_the_navigation_and_the_readme_links_the_site():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = _nav_files(config["nav"])
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert not pages - in_nav, f"add these pages to the nav in mkdocs.yml: {sorted(pages - in_nav)}"
    assert not in_nav - pages, f"the nav names pages that do not exist: {sorted(in_nav - pages)}"
    readme = (ROOT / "README.md").read_text()
    assert "docs/index.md" in readme and "mkdocs serve" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link


@pytest.mark.slow  # the whole site with its API reference
def test_mkdocs_builds_the_site_strictly(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs build needs pip install -e '.[docs]'")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "results_frame" in api and "write_report" in api  # the API reference is generated from docstrings
