"""Installing as the README says, and a ComfyUI whose Python lacks some requirements: one test per class.

The pack must load every node whatever is missing (a node that drops out turns every example workflow red) and
say in one console line which requirements are missing and the command that installs them; requirements.txt lists
exactly what the code imports; the README's own install passes the README's own test command.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "comfy_extras", "comfy_api", "comfy_execution", "folder_paths", "latent_preview", "server",
                "execution", "node_helpers"}
PROVIDED_BY_THE_HOST = {"torch"}  # never listed: ComfyUI's own build (README, "Install in ComfyUI")
OPTIONAL = {"xformers", "mediapipe"}  # used when installed, never required
COMFYUI_OWN = {"numpy", "pillow"}  # ComfyUI itself cannot start without these


def module_of(distribution: str) -> str:
    from nodes.requirements_check import module_of as module_of_distribution

    return module_of_distribution(distribution)


def requirements() -> dict[str, str]:
    from nodes.requirements_check import requirements as listed

    return listed()


def third_party_modules() -> set[str]:
    """Top-level modules the pack's code imports (at any depth: heavy imports sit inside functions) or locates by
    name with importlib.util.find_spec, minus the standard library and the pack itself."""
    found = set()
    for path in sorted((REPO_ROOT / "xportrait_core").rglob("*.py")) + sorted((REPO_ROOT / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec" and node.args
                  and isinstance(node.args[0], ast.Constant)):
                found.add(str(node.args[0].value).split(".")[0])
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                    isinstance(t, ast.Name) and t.id.endswith("_MODULE") for t in node.targets):
                found.add(str(node.value.value))  # e.g. MODEL_PACKAGE_MODULE, located with find_spec
    return found - set(sys.stdlib_module_names) - {"xportrait_core", "nodes", "__future__"} - HOST_MODULES


def test_requirements_list_exactly_what_the_code_imports():
    """No unused requirement (transformers and einops were listed, never imported; diffusers was, for schedulers the
    pack now has of its own) and none forgotten."""
    listed = {module_of(distribution) for distribution in requirements()}
    assert listed == third_party_modules() - PROVIDED_BY_THE_HOST - OPTIONAL
    assert "transformers" not in listed and "einops" not in listed


def test_pyproject_dependencies_are_requirements_txt():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == sorted(requirements().values())


PACK_LOAD = """
import importlib.util, logging, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed: import fails, importlib.util.find_spec answers None
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
spec = importlib.util.spec_from_file_location("custom_pack", sys.argv[2] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[2]])
pack = importlib.util.module_from_spec(spec)
sys.modules["custom_pack"] = pack
spec.loader.exec_module(pack)
for node_id, cls in sorted(pack.NODE_CLASS_MAPPINGS.items()):
    cls.INPUT_TYPES()
    print("node", node_id)
"""


def load_the_pack_without(modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PACK_LOAD, ",".join(modules), str(REPO_ROOT)], cwd="/",
                          capture_output=True, text=True)


def test_with_requirements_missing_the_pack_loads_all_nodes_and_says_so_in_one_line():
    """Everything the pack needs beyond ComfyUI's own numpy and Pillow hidden at once."""
    hidden = {distribution: module_of(distribution) for distribution in requirements()
              if distribution not in COMFYUI_OWN}
    loaded = load_the_pack_without(list(hidden.values()))
    complete = load_the_pack_without([])
    assert loaded.returncode == 0, loaded.stderr
    nodes = [line for line in loaded.stdout.splitlines() if line.startswith("node ")]
    assert nodes == [line for line in complete.stdout.splitlines() if line.startswith("node ")]
    assert len(nodes) == 11  # the ten X-Portrait nodes (three of them for a face in a whole picture) and the Guider
    warnings = [line for line in loaded.stderr.splitlines() if "X-Portrait" in line]
    assert len(warnings) == 1, loaded.stderr
    specs = [requirements()[distribution] for distribution in hidden]
    assert f"missing Python packages {', '.join(specs)}" in warnings[0]
    assert f'"{sys.executable}" -m pip install ' + " ".join(f'"{spec}"' for spec in specs) in warnings[0]


def test_with_every_requirement_installed_the_pack_says_nothing():
    loaded = load_the_pack_without([])
    assert loaded.returncode == 0 and "X-Portrait" not in loaded.stderr, loaded.stderr


SAMPLING_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed
from test_sampler import run
for scheduler in ("ddim", "euler", "dpmpp_2m", "lcm"):
    result, _ = run(frames=16, steps=3, scheduler=scheduler, cfg=2.0)
    print(scheduler, len(result.timesteps), bool(result.latents.isfinite().all()))
"""


def test_every_scheduler_samples_without_diffusers_or_transformers():
    """The schedulers are the pack's own sigma-space samplers: neither package is needed (nor listed)."""
    done = subprocess.run([sys.executable, "-c", SAMPLING_WITHOUT, "diffusers,transformers"], cwd=REPO_ROOT,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ddim 3 True", "euler 3 True", "dpmpp_2m 3 True", "lcm 3 True"]
    assert "diffusers" not in requirements() and "transformers" not in requirements()


def test_the_tests_run_in_the_folder_the_readmes_git_clone_makes(tmp_path):
    """`git clone .../comfyui-xportrait` makes a folder that is no Python name; the pack root holds ComfyUI's
    __init__.py: pytest must not import it as a package."""
    checkout = tmp_path / "comfyui-xportrait"
    (checkout / "tests").mkdir(parents=True)
    for name in ("__init__.py", "pyproject.toml", "tests/pytest.ini"):
        if (REPO_ROOT / name).exists():
            shutil.copy(REPO_ROOT / name, checkout / name)
    (checkout / "tests" / "test_probe.py").write_text("def test_probe():\n    assert True\n")
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=checkout,
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout[-3000:]


def test_the_readmes_test_section_installs_the_test_requirements():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Test", 1)[1].split("\n## ", 1)[0]
    assert "pip install -r requirements.txt -r requirements-test.txt" in section
    assert section.index("requirements-test.txt") < section.index("python -m pytest -q tests")


def test_pip_install_dot_packages_every_module_and_the_demos_data(tmp_path):
    """`pip install .` (a wheel of a copy of the checkout, so nothing is written into it) holds every module of
    xportrait_core and the demo's landmark file (once it held no `landmarks` subpackage)."""
    import zipfile

    copy = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "xportrait_core", copy / "xportrait_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, copy / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".",
                            "-w", str(tmp_path / "wheel")], cwd=copy, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl")))
    expected = {path.relative_to(copy).as_posix() for path in (copy / "xportrait_core").rglob("*")
                if path.suffix in (".py", ".json")}
    assert expected <= set(wheel.namelist())
    assert "xportrait_core/controls/landmarks/dlib_provider.py" in expected
    assert "xportrait_core/cli/data/astronaut_landmarks_256.json" in expected
    entry_points = next(name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt"))
    assert "xportrait = xportrait_core.cli.main:console" in wheel.read(entry_points).decode()  # the console command
