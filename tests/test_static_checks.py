"""The linter and the type checker run clean on the whole tree (their settings: pyproject.toml [tool.ruff],
[tool.mypy]). Both come with requirements-test.txt; nothing is cached into the checkout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(tool: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *tool], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": "", "MYPY_CACHE_DIR": str(tmp_path / "mypy_cache"), "HOME": str(tmp_path)})


def test_ruff_finds_nothing(tmp_path):
    checked = run(["ruff", "check", "--no-cache", "."], tmp_path)
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]


def test_mypy_finds_nothing(tmp_path):
    checked = run(["mypy"], tmp_path)
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert "Success" in checked.stdout
