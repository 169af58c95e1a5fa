"""The code map holds: xportrait_core is grouped by role and imports run one way (docs/code_map.md).

Read from the source tree with ast, so every import counts, including those inside functions (the pack imports
heavy modules lazily).
"""
from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE = REPO_ROOT / "xportrait_core"
NODES = REPO_ROOT / "nodes"
ROLES = ("networks", "model", "sampling", "controls", "media", "batch_queue", "cli")

# Which parts each part may import (besides itself). Everything else is an upward or sideways import.
# options (the option table and the numbers every part shares) is the one leaf all of them may import.
ALLOWED = {
    "options": set(),
    "networks": {"options"},
    "media": {"options"},
    "controls": {"options", "media"},
    "model": {"options", "networks", "media"},  # media only for safe_output: checkpoints are written like every output
    "sampling": {"options", "model", "networks"},
    "pipeline": {"options", "sampling", "controls", "model", "networks", "media"},
    "batch_queue": {"options", "media"},  # media only for safe_output: the state file and downloads, atomically
    "cli": {"options", "root", "batch_queue", "pipeline", "sampling", "controls", "model", "networks", "media"},
    "root": {"cli", "pipeline", "sampling", "model"},  # __main__ runs the cli; __init__ names the public API
    # The nodes go through the pipeline, the narrow waist of both front ends; besides it only the option table and
    # the landmark providers they hand on.
    "nodes": {"options", "pipeline", "controls"},
}
# Modules that lower parts must not touch even where their part is allowed.
FORBIDDEN_MODULES = {
    "controls": {"xportrait_core.media.video_io"},  # controls see frames, never files
    "sampling": {"xportrait_core.media.video_io"},
    "model": {"xportrait_core.media.video_io", "xportrait_core.media.image_fit"},
    "batch_queue": {"xportrait_core.media.video_io", "xportrait_core.media.image_fit"},
}
# Parts a part may import only some modules of.
ONLY_MODULES = {
    "nodes": {"controls": ("xportrait_core.controls.landmarks",)},  # the providers; the rest through the pipeline
}
HOST_MODULES = ("comfy", "comfy_extras", "comfy_api", "comfy_execution", "folder_paths", "latent_preview", "server",
                "execution", "node_helpers")


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "nodes":
        return "nodes"
    if len(parts) == 1 or parts[1] == "__main__":
        return "root"
    return parts[1]  # a role, or "pipeline"


def imported_modules(path: Path, root: Path = REPO_ROOT) -> list[tuple[str, int]]:
    """Absolute names of everything `path` (in the tree at `root`) imports (any depth in the file), with line
    numbers."""
    package = module_name(path, root) if path.name == "__init__.py" else module_name(path, root).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from package import module` imports the module too
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names
                      if _is_module(f"{target}.{alias.name}", root)]
    return found


def _is_module(name: str, root: Path) -> bool:
    relative = Path(*name.split("."))
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def source_files(root: Path = REPO_ROOT) -> list[Path]:
    return sorted((root / "xportrait_core").rglob("*.py")) + sorted((root / "nodes").glob("*.py"))


def ours(name: str) -> bool:
    return name == "xportrait_core" or name.startswith("xportrait_core.") or name.startswith("nodes.")


def test_every_role_is_a_subpackage_that_says_what_it_holds_and_may_import():
    for role in ROLES:
        init = CORE / role / "__init__.py"
        assert init.is_file(), f"xportrait_core/{role}/ is not a package"
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in docstring, f"xportrait_core/{role}/__init__.py does not say what it may import"


def test_no_module_sits_loose_beside_the_role_subpackages():
    loose = {path.name for path in CORE.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "options.py", "pipeline.py"}


def one_way_violations(root: Path) -> list[str]:
    """Every import of the tree at `root` that runs against ALLOWED, FORBIDDEN_MODULES or ONLY_MODULES."""
    violations = []
    for path in source_files(root):
        importer = module_name(path, root)
        source_part = part_of(importer)
        for target, line in imported_modules(path, root):
            if not ours(target) or target == "nodes" or target.startswith("nodes."):
                continue
            target_part = part_of(target)
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if target_part != source_part and target_part not in ALLOWED[source_part]:
                violations.append(f"{where} ({source_part} may not import {target_part})")
            if target in FORBIDDEN_MODULES.get(source_part, ()):
                violations.append(f"{where} ({source_part} may not import {target})")
            only = ONLY_MODULES.get(source_part, {}).get(target_part)
            if only and not target.startswith(only):
                violations.append(f"{where} ({source_part} may import only {', '.join(only)} of {target_part})")
    return violations


def test_imports_run_one_way():
    violations = one_way_violations(REPO_ROOT)
    assert not violations, "\n".join(violations)


def test_the_core_never_imports_the_host_or_the_nodes():
    violations = [f"{path.relative_to(REPO_ROOT)}:{line} imports {target}"
                  for path in sorted(CORE.rglob("*.py")) for target, line in imported_modules(path)
                  if target.split(".")[0] in HOST_MODULES + ("nodes",)]
    assert not violations, "\n".join(violations)


def test_only_the_host_seam_imports_comfyui():
    violations = [f"{path.relative_to(REPO_ROOT)}:{line} imports {target}"
                  for path in sorted(NODES.glob("*.py")) if path.name != "host.py"
                  for target, line in imported_modules(path) if target.split(".")[0] in HOST_MODULES]
    assert not violations, "\n".join(violations)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for path in source_files():
        graph[module_name(path)] = {target for target, _ in imported_modules(path)
                                    if ours(target) and target != module_name(path)}
    # A module importing its own package's __init__ is Python's normal order, not a cycle between modules.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    path_stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path_stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path_stack[path_stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in graph and not state.get(target):
                visit(target)
        path_stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module)


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself, on a copy of the tree (nothing is written into the checkout): a networks module importing
    sampling and a node importing the sampler directly are reported."""
    for part in ("xportrait_core", "nodes"):
        shutil.copytree(REPO_ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    probe = tmp_path / "xportrait_core" / "networks" / "_upward_probe.py"
    probe.write_text("from ..sampling.sampler import sample\n")
    (tmp_path / "nodes" / "_waist_probe.py").write_text("from xportrait_core.sampling.sampler import sample\n")
    violations = "\n".join(one_way_violations(tmp_path))
    assert "networks may not import sampling" in violations and "nodes may not import sampling" in violations


@pytest.mark.parametrize("name, module", [
    ("load_model", "xportrait_core.model.checkpoint"),
    ("XPortraitModel", "xportrait_core.model.xportrait_model"),
    ("sample", "xportrait_core.sampling.sampler"),
    ("SamplerOptions", "xportrait_core.sampling.sampler"),
    ("animate", "xportrait_core.pipeline"),
])
def test_public_names_are_reachable_from_the_package(name, module):
    import xportrait_core

    assert getattr(xportrait_core, name) is getattr(importlib.import_module(module), name)


def test_importing_the_package_stays_light():
    probe = "import sys, xportrait_core; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.stdout.strip() == "False", completed.stderr


def test_the_batch_queue_needs_only_the_standard_library_the_options_and_safe_output():
    """What xportrait_core/batch_queue/__init__.py promises: importing all of it loads no torch, no numpy, and of
    xportrait_core nothing but the batch queue, the option table and media.safe_output."""
    probe = ("import sys, xportrait_core.batch_queue.command; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('xportrait_core', 'torch', 'numpy')))")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    loaded = set(ast.literal_eval(completed.stdout.strip()))
    allowed = {"xportrait_core", "xportrait_core.options", "xportrait_core.media", "xportrait_core.media.safe_output"}
    assert {m for m in loaded if not m.startswith("xportrait_core.batch_queue")} <= allowed, loaded
    assert "xportrait_core.batch_queue.runner" in loaded
