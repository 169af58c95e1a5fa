"""The API-format workflow a queue runs: read and checked (`load_workflow`), its loader and seed nodes found
(`locate_workflow_inputs`), and patched per job (`patch_workflow`) with the inputs' names on the server
(`upload_name`).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batch_plan import QueueInputError, file_digest, shown

# Which input of each loader node receives the uploaded file name.
FILE_INPUT_BY_CLASS = {"LoadImage": "image", "LoadVideo": "file"}
SOURCE_CLASS, DRIVING_CLASS = "LoadImage", "LoadVideo"
# Inputs that take a seed: `seed` (X-Portrait Sampler, KSampler), `noise_seed` (RandomNoise, SamplerCustom).
SEED_INPUTS = ("seed", "noise_seed")
UPLOAD_HASH_CHARS = 12  # enough to tell apart inputs of one batch


@dataclass(frozen=True)
class WorkflowInputs:
    """Where a job's values go in the workflow: node ids of the loaders and of the seeded nodes."""

    source_node: str
    driving_node: str
    seed_nodes: tuple[str, ...]


def load_workflow(path: Path) -> dict[str, Any]:
    """Read an API-format workflow (`{node_id: {"class_type": ..., "inputs": {...}}}`)."""
    if path.is_dir():
        raise QueueInputError(f"Workflow file {path} is a folder; give the .json file from Workflow > Export (API).")
    try:
        workflow = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise QueueInputError(f"Workflow file {path} does not exist.") from None
    except UnicodeDecodeError as error:
        raise QueueInputError(f"Workflow file {path} is not UTF-8 text (byte {error.start}); give the .json file "
                              "ComfyUI exported.") from None
    except OSError as error:
        raise QueueInputError(f"Workflow file {path} cannot be read ({error.strerror}).") from None
    except json.JSONDecodeError as error:
        raise QueueInputError(f"Workflow file {path} is not valid JSON: {error}.") from None
    if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
        raise QueueInputError(
            f"Workflow file {path} is in the editor's UI format. In ComfyUI use Workflow > Export (API) and "
            "give that file."
        )
    expected = "an API-format workflow (node id -> {\"class_type\": ..., \"inputs\": {...}})"
    if not isinstance(workflow, dict) or not workflow:
        raise QueueInputError(f"Workflow file {path} holds {shown(workflow)}, not {expected}.")
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise QueueInputError(f"Workflow file {path}, node {node_id}: {shown(node)} is no node of {expected}.")
        if not isinstance(node.get("inputs", {}), dict):
            raise QueueInputError(f"Workflow file {path}, node {node_id} ({node['class_type']}): its inputs are "
                                  f"{shown(node['inputs'])}, not a {{name: value}} object; export the workflow "
                                  "again with Workflow > Export (API).")
    return workflow


def locate_workflow_inputs(
    workflow: dict[str, Any], source_node: str | None = None, driving_node: str | None = None
) -> WorkflowInputs:
    """Find the source and driving loader nodes and the nodes with a literal `seed` or `noise_seed` input.

    Given ids are checked and used. Otherwise the single LoadImage is the source and the single
    LoadVideo the driving; with several, the one whose title (`_meta.title`) contains "source" or
    "driving" is taken. A LoadImage titled "driving" can serve as driving when there is no LoadVideo.
    """
    source = source_node or _detect(workflow, "source", SOURCE_CLASS, exclude=driving_node)
    driving = driving_node or _detect(workflow, "driving", DRIVING_CLASS, exclude=source)
    for node_id, role, option in ((source, "source", "--source-node"), (driving, "driving", "--driving-node")):
        if node_id not in workflow:
            raise QueueInputError(f"The workflow has no node {node_id!r} for the {role} ({option}).")
        class_type = workflow[node_id]["class_type"]
        if class_type not in FILE_INPUT_BY_CLASS:
            raise QueueInputError(
                f"Node {node_id} ({class_type}) cannot take the {role} file; {option} must name a "
                f"{' or '.join(FILE_INPUT_BY_CLASS)} node."
            )
    if source == driving:
        raise QueueInputError(f"Source and driving both resolve to node {source}; set --source-node/--driving-node.")
    seeds = tuple(node_id for node_id, node in workflow.items()
                  if any(isinstance(node.get("inputs", {}).get(name), int) for name in SEED_INPUTS))
    return WorkflowInputs(source_node=source, driving_node=driving, seed_nodes=seeds)


def _detect(workflow: dict[str, Any], role: str, class_type: str, exclude: str | None) -> str:
    candidates = [i for i, node in workflow.items() if node["class_type"] == class_type and i != exclude]
    titled = [i for i in candidates if role in _title(workflow[i])]
    if len(candidates) == 1:
        return candidates[0]
    if len(titled) == 1:
        return titled[0]
    if not candidates and role == "driving":
        # No LoadVideo: a LoadImage titled "driving" (an animated GIF/WebP loads as frames) may serve.
        titled_images = [i for i, node in workflow.items() if node["class_type"] == SOURCE_CLASS
                         and i != exclude and role in _title(node)]
        if len(titled_images) == 1:
            return titled_images[0]
    found = ", ".join(f"{i} ({_title(workflow[i]) or 'untitled'})" for i in candidates) or "none"
    raise QueueInputError(
        f"Cannot tell which node takes the {role}: {class_type} nodes found: {found}. Give its id with "
        f"--{role}-node, or put '{role}' in that node's title."
    )


def _title(node: dict[str, Any]) -> str:
    meta = node.get("_meta")
    return str(meta.get("title", "")).lower() if isinstance(meta, dict) else ""


def patch_workflow(
    workflow: dict[str, Any], inputs: WorkflowInputs, source_name: str, driving_name: str, seed: int | None,
    seed_offset: int,
) -> dict[str, Any]:
    """A copy of `workflow` with the uploaded file names and the job's seed set.

    seed: the base seed; None keeps each node's own value. seed_offset is added to the base
    (0 for the fixed policy, the job index for the increment policy).
    """
    patched = copy.deepcopy(workflow)
    for node_id, name in ((inputs.source_node, source_name), (inputs.driving_node, driving_name)):
        node = patched[node_id]
        node.setdefault("inputs", {})[FILE_INPUT_BY_CLASS[node["class_type"]]] = name
    for node_id in inputs.seed_nodes:
        node_inputs = patched[node_id]["inputs"]
        for name in SEED_INPUTS:
            if isinstance(node_inputs.get(name), int):
                node_inputs[name] = (node_inputs[name] if seed is None else seed) + seed_offset
    return patched


def upload_name(path: Path, digest: str | None = None) -> str:
    """Name an input by its content (`face-1a2b3c4d5e6f.png`): uploading with overwrite can then never
    replace a different file another job still needs, and re-uploads are harmless. digest: the file's
    `file_digest`, when known."""
    digest = digest or file_digest(path)
    return f"{_ascii_name(path.stem)}-{digest[:UPLOAD_HASH_CHARS]}{path.suffix.lower()}"


def _ascii_name(name: str) -> str:
    """The ASCII letters, digits and separators of `name` (a name on the server, where a content digest follows it:
    ComfyUI's loaders list files by these names); "input" when none are left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "input"
