"""The package the Comfy registry gets: pyproject's registry fields, and the archive built the way comfy-cli builds it
(`comfy node pack` / `publish`: the git-tracked files, minus what `.comfyignore`'s gitignore-style patterns match, plus
[tool.comfy] includes; read from comfy-cli's comfy_cli/file_utils.py zip_files). It must hold what a user needs and
nothing else, under 5 MB."""
from __future__ import annotations

import re
import subprocess
import warnings
import zipfile
from pathlib import Path

import pathspec
import pytest
import tomllib
from packaging.specifiers import SpecifierSet

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_PACKAGE_BYTES = 5 * 1024 * 1024
TESTED_COMFYUI = "0.3.64"
RAW_GITHUB = re.compile(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(?P<path>.+)$")
NOT_FOR_USERS = ("tests/", "bench/", "tools/", ".ci/", "requirements-test.txt")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".mp4"}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files"], capture_output=True, text=True, check=True)
    return [line for line in listed.stdout.splitlines() if line.strip()]


def registry_files(includes: list[str]) -> list[str]:
    """comfy-cli's selection: tracked files not matched by .comfyignore (unless under an include)."""
    lines = (REPO_ROOT / ".comfyignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    with warnings.catch_warnings():  # pathspec 1.x deprecates the name comfy-cli uses; the matching is the same
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    prefixes = [include.strip("/") for include in includes]

    def forced(path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes if prefix)

    return [path for path in tracked_files()
            if (REPO_ROOT / path).is_file() and (forced(path) or not spec.match_file(path))]


@pytest.fixture(scope="module")
def package(pyproject, tmp_path_factory) -> Path:
    archive = tmp_path_factory.mktemp("registry") / "node.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in registry_files(pyproject["tool"]["comfy"].get("includes", [])):
            zipped.write(REPO_ROOT / path, path)
    return archive


def test_the_registry_fields_name_icon_comfyui_versions_and_classifiers(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower()  # the registry's naming rule
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", project["name"]) and len(project["name"]) < 100
    icon = RAW_GITHUB.match(comfy["Icon"])
    assert icon and (REPO_ROOT / icon["path"]).is_file() and icon["path"] in tracked_files()
    assert TESTED_COMFYUI in SpecifierSet(comfy["requires-comfyui"])
    assert project["classifiers"] and all(" :: " in classifier for classifier in project["classifiers"])


def test_the_package_holds_the_nodes_the_core_and_the_templates_and_nothing_for_developers(package):
    with zipfile.ZipFile(package) as zipped:
        names = set(zipped.namelist())
    needed = {"__init__.py", "pyproject.toml", "requirements.txt", "README.md", "nodes/host.py",
              "xportrait_core/pipeline.py", "xportrait_core/cli/data"}
    assert {name for name in needed if name in names or any(n.startswith(name + "/") for n in names)} == needed
    code = {path for path in tracked_files() if path.startswith(("nodes/", "xportrait_core/"))}
    assert code <= names
    templates = {path for path in tracked_files() if path.startswith("example_workflows/")}
    assert templates and templates <= names
    assert not [name for name in names if name.startswith(NOT_FOR_USERS)]
    assert not [name for name in names if name.startswith("docs/") and Path(name).suffix.lower() in IMAGE_SUFFIXES]


def test_the_package_is_under_5_mb(package):
    assert package.stat().st_size < MAX_PACKAGE_BYTES, f"{package.stat().st_size / 2**20:.1f} MB"
