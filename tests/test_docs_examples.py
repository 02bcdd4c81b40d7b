"""Every ```python block in docs/ runs as written, so that the documentation cannot drift from the code.

The convention: a block that cannot run here (it submits to Slurm, needs a GPU or data that are not here) has the
HTML comment ``<!-- no-run -->`` on the line right before its ```python fence; every other block runs. The blocks
of one page run in order in one namespace, like a notebook's cells, in a fresh NNTRANSFER_HOME (an embedded
database of their own, started only if a block uses it) and a fresh working directory. The digits data are there
(scikit-learn's); nothing is downloaded. Each page runs in a process of its own, forked from a server that has
imported torch already (the start-up cost is paid once, not per page).
"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from docs_blocks import NO_RUN, blocks, run_page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(page for page in DOCS.rglob("*.md") if any(block.runs for block in blocks(page)))
# page (relative to docs/) -> why its blocks take long: they run with `pytest -m slow`
SLOW_PAGES = {"neural.md": "trains the digits -> neurons transfer with the page's (default) epochs"}


def run_in_own_process(page: Path, tmp_path: Path) -> dict:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    context = multiprocessing.get_context("forkserver")
    # what the local workers preload as well (whoever starts the fork server first sets it)
    context.set_forkserver_preload(["torch", "nntransfer.store.trained_model", "nntransfer.store.transfer",
                                    "nntransfer.runner"])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_page, str(page), str(home), str(work)).result(timeout=600)


@pytest.mark.parametrize("page", [pytest.param(page, marks=[pytest.mark.slow] if str(page.relative_to(DOCS))
                                               in SLOW_PAGES else []) for page in PAGES],
                         ids=lambda page: str(page.relative_to(DOCS)))
def test_the_python_blocks_of_a_docs_page_run(page, tmp_path):
    result = run_in_own_process(page, tmp_path)
    failed = result["failed"]
    if failed is not None:
        pytest.fail(f"the ```python block at {page.relative_to(ROOT)}:{failed['line']} fails (fix it, or mark it "
                    f"{NO_RUN} on the line before the fence if it cannot run here):\n{failed['traceback']}",
                    pytrace=False)
    assert result["ran"] == sum(block.runs for block in blocks(page))


def test_a_block_marked_no_run_is_skipped_and_the_others_share_a_namespace(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```python\nanswer = 42\n```\n\nSome text.\n\n<!-- no-run -->\n```python\n"
                    "raise RuntimeError('submits to Slurm')\n```\n\n```python\nopen('seen', 'w').write(str(answer))\n"
                    "```\n\n```bash\nexit 1\n```\n")
    assert [(block.line, block.runs) for block in blocks(page)] == [(3, True), (10, False), (14, True)]
    result = run_in_own_process(page, tmp_path)
    assert result == {"ran": 2, "failed": None}
    assert (tmp_path / "work" / "seen").read_text() == "42"  # in the page's own working directory
    page.write_text(page.read_text().replace(NO_RUN, ""))
    (tmp_path / "work").rename(tmp_path / "first")
    result = run_in_own_process(page, tmp_path)
    assert result["ran"] == 1 and result["failed"]["line"] == 10
    assert "RuntimeError: submits to Slurm" in result["failed"]["traceback"] and "page.md:10" in \
        result["failed"]["traceback"]


def test_every_docs_page_is_checked_and_the_convention_is_written_where_docs_are():
    assert len(PAGES) >= 10  # the pages with code
    assert not set(SLOW_PAGES) - {str(page.relative_to(DOCS)) for page in PAGES}
    assert NO_RUN in (DOCS / "index.md").read_text()  # how to mark a block, for whoever writes docs
