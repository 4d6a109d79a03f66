"""The README and the docs pages: every relative link and image resolves, and the README stays short."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    targets = [t for t in LINK.findall(page.read_text()) if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text) < 8000
    assert "transferlab train my_folder/" in text and "make demo" in text and "make test" in text
    assert all(f"docs/{page.name}" in text for page in PAGES[1:]), "the README links every docs page"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_tests_named_in_the_docs_exist(page):
    """reliability.md and the others name the test that proves each claim: it must be there."""
    for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", page.read_text()):
        source = ROOT / path
        assert source.exists(), f"{page.name} names {path}, which does not exist"
        assert f"def {name}(" in source.read_text(), f"{page.name} names {path}::{name}, which does not exist"
