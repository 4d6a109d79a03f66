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


def _documented_options() -> dict[str, set[str]]:
    """Per command, the flags docs/guide.md's "Every option" section lists."""
    text = (ROOT / "docs" / "guide.md").read_text().split("## Every option", 1)[1]
    sections = re.split(r"^### `transferlab ([\w-]+)`$", text, flags=re.M)[1:]
    return {name: set(re.findall(r"`(--[\w-]+)`", body.split("\n## ")[0]))
            for name, body in zip(sections[::2], sections[1::2])}  # fmt: skip


def _parser_options() -> dict[str, set[str]]:
    """Per command, the flags ``--help`` lists."""
    import argparse

    from transferlab.cli import commands

    return {name: {flag for action in command._actions if action.help != argparse.SUPPRESS
                   for flag in action.option_strings if flag.startswith("--") and flag != "--help"}
            for name, command in commands().items()}  # fmt: skip


def test_every_option_of_every_command_is_documented_and_nothing_else():
    documented, actual = _documented_options(), _parser_options()
    assert set(documented) == set(actual), "a command without its section in docs/guide.md, or one too many"
    for command, flags in actual.items():
        assert flags - documented[command] == set(), f"{command}: in --help, not in docs/guide.md"
        assert documented[command] - flags == set(), f"{command}: in docs/guide.md, not in --help"


def option_tables() -> str:
    """docs/guide.md's per-command option tables, generated from the parser as it is now (help read
    from the strategy table)."""
    import argparse

    from transferlab.cli import commands

    sections = []
    for name, command in commands().items():
        rows = []
        for action in command._actions:
            flags = [flag for flag in action.option_strings if flag not in ("-h", "--help")]
            if not flags or action.help == argparse.SUPPRESS:
                continue
            text = action.help + (f" (one of {', '.join(map(str, action.choices))})" if action.choices else "")
            rows.append(f"| {', '.join(f'`{flag}`' for flag in flags)} | {text.replace('|', '/')} |")
        sections.append(f"### `transferlab {name}`\n\n| option | what it does |\n|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(sections)


def _guide_parts() -> tuple[str, str, str]:
    """docs/guide.md before the option tables, the tables, and after them."""
    text = (ROOT / "docs" / "guide.md").read_text()
    start = text.index("### `transferlab ", text.index("## Every option"))
    end = text.find("\n## ", start)
    end = len(text) if end < 0 else end + 1
    return text[:start], text[start:end], text[end:]


def test_the_option_tables_are_what_help_says_now():
    """Regenerate with ``python tests/test_docs.py``."""
    assert _guide_parts()[1] == option_tables(), "docs/guide.md's option tables differ from --help: python tests/test_docs.py"


if __name__ == "__main__":
    before, _, after = _guide_parts()
    (ROOT / "docs" / "guide.md").write_text(before + option_tables() + after)
