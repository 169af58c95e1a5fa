"""The example workflows in workflows/ against the node definitions they use: our nodes' live INPUT_TYPES and the
core nodes' /object_info recorded from ComfyUI 0.3.64 (tests/data/object_info_core.json). Also: our INPUT_TYPES
still equal the /object_info a real ComfyUI served for them (tests/data/object_info_xportrait.json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from xportrait_core.cli.batch_queue import load_workflow, locate_workflow_inputs

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
UI_WORKFLOWS = sorted(p for p in (ROOT / "workflows").glob("*.json") if not p.stem.endswith("_api"))
API_WORKFLOWS = sorted((ROOT / "workflows").glob("*_api.json"))
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Drop-downs filled from model folders: their options depend on the machine, so only their presence is compared.
FILE_INPUTS = {("XPortraitLoadModel", "checkpoint"), ("XPortraitLoRA", "lora_name"),
               ("XPortraitLandmarkProvider", "dlib_model")}
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_WIDGET = "image"


def live_object_info() -> dict[str, Any]:
    """Our nodes as /object_info would show them (the V1 parts that define a node's interface)."""
    info = {}
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        types = json.loads(json.dumps(cls.INPUT_TYPES()))
        info[node_id] = {
            "input": types, "input_order": {kind: list(types[kind]) for kind in types},
            "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES), "name": node_id,
            "display_name": NODE_DISPLAY_NAME_MAPPINGS[node_id], "category": cls.CATEGORY, "output_node": False,
        }
    return info


def definitions() -> dict[str, Any]:
    return {**json.loads((DATA / "object_info_core.json").read_text()), **live_object_info()}


def ordered_inputs(definition: dict[str, Any]) -> list[tuple[str, list, bool]]:
    """[(name, spec, required)] in the node's input order."""
    result = []
    for kind in ("required", "optional"):
        for name in definition["input_order"].get(kind, []):
            result.append((name, definition["input"][kind][name], kind == "required"))
    return result


def is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def combo_options(spec: list) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return spec[1].get("options")
    return None


def check_value(node_type: str, name: str, spec: list, value: Any) -> None:
    options = combo_options(spec)
    where = f"{node_type}.{name}"
    if options is not None:
        if options and (node_type, name) not in FILE_INPUTS:
            assert value in options, f"{where}: {value!r} not in {options}"
        else:
            assert isinstance(value, str), where
        return
    settings = spec[1] if len(spec) > 1 else {}
    if spec[0] in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert settings.get("min", value) <= value <= settings.get("max", value), f"{where}: {value} out of range"
    if spec[0] == "INT":
        assert isinstance(value, int), where
    if spec[0] == "STRING":
        assert isinstance(value, str), where


def link_compatible(output_type: str, input_spec: list) -> bool:
    """A link carries one type name; the input must declare the same (a FLOAT widget takes a FLOAT link)."""
    return input_spec[0] == output_type


# ------------------------------------------------------------------------------------------------ UI format
@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_uses_only_known_nodes_and_type_compatible_links(path):
    workflow = json.loads(path.read_text())
    known = definitions()
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert all(node["type"] in known for node in nodes.values())
    for link_id, source, slot, target, target_slot, link_type in workflow["links"]:
        output_type = known[nodes[source]["type"]]["output"][slot]
        target_input = nodes[target]["inputs"][target_slot]
        spec = dict((n, s) for n, s, _ in ordered_inputs(known[nodes[target]["type"]]))[target_input["name"]]
        assert output_type == link_type and target_input["link"] == link_id
        assert link_compatible(output_type, spec), f"link {link_id}: {output_type} into {target_input['name']}"


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_widget_values_follow_the_definitions(path):
    known = definitions()
    for node in json.loads(path.read_text())["nodes"]:
        linked = {entry["name"] for entry in node["inputs"] if entry.get("link") is not None}
        values = list(node["widgets_values"])
        for name, spec, required in ordered_inputs(known[node["type"]]):
            if name in linked:
                continue
            assert is_widget(spec) or not required, f"{node['type']}: required input {name} is not linked"
            if not is_widget(spec):
                continue
            settings = spec[1] if len(spec) > 1 else {}
            if not values:
                # A widget added after the file was written: ComfyUI's front end (LGraphNode.configure) sets only the
                # values a file holds, so trailing widgets it lacks keep their defaults.
                assert "default" in settings, f"{node['type']}: no value for {name}, which has no default"
                continue
            check_value(node["type"], name, spec, values.pop(0))
            if settings.get("control_after_generate"):
                assert values.pop(0) in SEED_CONTROLS
            if settings.get("image_upload") or settings.get("video_upload"):
                assert values.pop(0) == UPLOAD_WIDGET
        assert values == [], f"{node['type']}: extra widget values {values}"


def test_the_four_example_workflows_exist():
    assert [p.stem for p in UI_WORKFLOWS] == ["xportrait_basic", "xportrait_fast_lcm", "xportrait_init_video",
                                              "xportrait_multi_reference"]


def test_the_fast_workflow_samples_with_lcm_few_steps_low_cfg_and_a_lora():
    nodes = {n["type"]: n for n in json.loads((ROOT / "workflows" / "xportrait_fast_lcm.json").read_text())["nodes"]}
    seed, _, steps, cfg, scheduler = nodes["XPortraitSampler"]["widgets_values"][:5]
    assert (scheduler, steps <= 8, 1.0 <= cfg <= 2.0) == ("lcm", True, True)
    assert any(entry["name"] == "lora" and entry["link"] for entry in nodes["XPortraitSampler"]["inputs"])


# ----------------------------------------------------------------------------------------------- API format
@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_api_workflow_inputs_are_complete_and_type_compatible(path):
    known = definitions()
    workflow = json.loads(path.read_text())
    for node_id, node in workflow.items():
        definition = known[node["class_type"]]
        for name, spec, required in ordered_inputs(definition):
            value = node["inputs"].get(name)
            if value is None:
                assert not required, f"node {node_id}: required input {name} missing"
            elif isinstance(value, list):
                source, slot = value
                output_type = known[workflow[source]["class_type"]]["output"][slot]
                assert link_compatible(output_type, spec), f"node {node_id}.{name}: {output_type}"
            else:
                check_value(node["class_type"], name, spec, value)
        assert set(node["inputs"]) <= {name for name, _, _ in ordered_inputs(definition)}


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_the_batch_queue_finds_source_driving_and_seed_in_the_api_workflow(path):
    workflow = load_workflow(path)
    found = locate_workflow_inputs(workflow)
    assert workflow[found.source_node]["class_type"] == "LoadImage"
    assert workflow[found.driving_node]["class_type"] == "LoadVideo"
    assert [workflow[n]["class_type"] for n in found.seed_nodes] == ["XPortraitSampler"]


def test_the_api_workflow_is_the_basic_ui_workflow():
    ui = json.loads((ROOT / "workflows" / "xportrait_basic.json").read_text())
    api = json.loads((ROOT / "workflows" / "xportrait_basic_api.json").read_text())
    assert sorted((str(n["id"]), n["type"]) for n in ui["nodes"]) == sorted((k, v["class_type"]) for k, v in api.items())


# ------------------------------------------------------------------------------------- recorded /object_info
def normalised(info: dict[str, Any]) -> dict[str, Any]:
    """The interface part of /object_info entries, with file drop-downs emptied."""
    keys = ("input", "input_order", "output", "output_name", "name", "display_name", "category")
    result = {node_id: {key: entry[key] for key in keys} for node_id, entry in info.items()}
    for node_id, name in FILE_INPUTS:
        for kind in ("required", "optional"):
            spec = result[node_id]["input"].get(kind, {}).get(name)
            if spec is not None:
                spec[0] = [option for option in spec[0] if option == "bundled"]
    return result


def test_live_input_types_equal_the_object_info_recorded_from_a_real_comfyui():
    recorded = json.loads((DATA / "object_info_xportrait.json").read_text())
    assert normalised(live_object_info()) == normalised(recorded)
