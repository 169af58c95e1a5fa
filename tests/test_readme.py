"""The README and docs/ as a reader follows them: every link leads to a file, the test command is the one CI runs,
the console command is the one `pip install .` makes, and no text points to issue numbers."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_leads_to_a_file(page):
    targets = [target for target in LINK.findall(page.read_text()) if "://" not in target]
    missing = [target for target in targets if not (page.parent / target).exists()]
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_points_to_an_issue_number(page):
    assert not re.findall(r"\b[Ii]ssues? #?\d+", page.read_text())


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```\n(.*?)```", text, flags=re.DOTALL)


def test_the_readmes_test_command_is_the_one_ci_runs():
    readme = (REPO_ROOT / "README.md").read_text()
    test_section = readme.split("\n## Test\n", 1)[1].split("\n## ", 1)[0]
    readme_command = next(line for block in code_blocks(test_section) for line in block.splitlines()
                          if "pytest" in line)
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_command = next(line.split("#")[0].strip() for line in ci.splitlines() if "-m pytest" in line)
    assert ci_command.replace("python3 ", "python ") == readme_command.strip()


def test_the_quick_starts_command_is_the_one_pip_install_makes():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert list(scripts) == ["xportrait"]
    readme = (REPO_ROOT / "README.md").read_text()
    quick_start = readme.split("\n## Command line quick start\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in code_blocks(quick_start) for line in block.splitlines()]
    assert "xportrait demo" in [line.split("#")[0].strip() for line in lines]
    assert any(line.startswith("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
               for line in lines)
