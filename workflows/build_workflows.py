"""Writes the example workflows of this folder (UI format, plus the API format of the basic one) from one
description per graph, so every file uses the same node layout and the widget order of the node definitions.

    python workflows/build_workflows.py    # from the pack root; rewrites workflows/*.json

Widget order comes from our nodes' INPUT_TYPES and, for core nodes, from tests/data/object_info_core.json (recorded
from ComfyUI 0.3.64). tests/test_workflows.py checks the written files, not this script.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACK_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT))

from nodes import NODE_CLASS_MAPPINGS  # noqa: E402

CORE_OBJECT_INFO = PACK_ROOT / "tests" / "data" / "object_info_core.json"
OUT_DIR = PACK_ROOT / "workflows"
CHECKPOINT = "model_state-415001.safetensors"
LCM_LORA = "lcm-lora-sdv1-5.safetensors"
SEED_CONTROL = "fixed"  # value the front end stores after an INT input with control_after_generate
UPLOAD_WIDGET = "image"  # value stored for the upload button of LoadImage / LoadVideo
COLUMN, ROW = 360, 260  # layout grid in canvas pixels


@dataclass
class Node:
    id: int
    type: str
    title: str
    column: int
    row: int
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input name -> (source node id, output slot)


def _definitions() -> dict[str, dict[str, Any]]:
    """class -> {"inputs": [(name, spec)...] in order, "outputs": [(name, type)...]}."""
    core = json.loads(CORE_OBJECT_INFO.read_text())
    result = {}
    for name, info in core.items():
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        result[name] = {"inputs": [(n, specs[n]) for n in order], "outputs": list(zip(info["output_name"],
                                                                                      info["output"]))}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        specs = {**types.get("required", {}), **types.get("optional", {})}
        result[name] = {"inputs": list(specs.items()), "outputs": list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES))}
    return result


def _is_widget(spec: list | tuple) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _widget_values(node: Node, definition: dict[str, Any]) -> list[Any]:
    values = []
    for name, spec in definition["inputs"]:
        if not _is_widget(spec) or name in node.links:
            continue
        options = spec[1] if len(spec) > 1 else {}
        values.append(node.widgets.get(name, options.get("default")))
        if options.get("control_after_generate"):
            values.append(SEED_CONTROL)
        if options.get("image_upload") or options.get("video_upload"):
            values.append(UPLOAD_WIDGET)
    return values


def ui_workflow(nodes: list[Node]) -> dict[str, Any]:
    definitions = _definitions()
    links, outputs = [], {}
    for node in nodes:
        for input_name, (source, slot) in node.links.items():
            link_type = definitions[_node(nodes, source).type]["outputs"][slot][1]
            links.append([len(links) + 1, source, slot, node.id, input_name, link_type])
            outputs.setdefault((source, slot), []).append(len(links))
    ui_nodes = []
    for order, node in enumerate(nodes):
        definition = definitions[node.type]
        inputs = []
        for name, spec in definition["inputs"]:
            if name not in node.links:
                continue
            link_id = next(link[0] for link in links if link[3] == node.id and link[4] == name)
            entry = {"name": name, "type": "COMBO" if isinstance(spec[0], list) else spec[0], "link": link_id}
            if _is_widget(spec):
                entry["widget"] = {"name": name}
            inputs.append(entry)
        ui_nodes.append({
            "id": node.id, "type": node.type, "title": node.title, "pos": [node.column * COLUMN, node.row * ROW],
            "size": [320, 200], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "links": outputs.get((node.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(definition["outputs"])],
            "properties": {"Node name for S&R": node.type}, "widgets_values": _widget_values(node, definition),
        })
    ui_links = [[link_id, source, slot, target, _input_slot(ui_nodes, target, name), kind]
                for link_id, source, slot, target, name, kind in links]
    return {"last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": ui_links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def _node(nodes: list[Node], node_id: int) -> Node:
    return next(n for n in nodes if n.id == node_id)


def _input_slot(ui_nodes: list[dict], node_id: int, name: str) -> int:
    node = next(n for n in ui_nodes if n["id"] == node_id)
    return next(i for i, entry in enumerate(node["inputs"]) if entry["name"] == name)


def api_workflow(nodes: list[Node]) -> dict[str, Any]:
    definitions = _definitions()
    prompt = {}
    for node in nodes:
        inputs: dict[str, Any] = {}
        for name, spec in definitions[node.type]["inputs"]:
            if name in node.links:
                source, slot = node.links[name]
                inputs[name] = [str(source), slot]
            elif _is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                if name in node.widgets or "default" in options:
                    inputs[name] = node.widgets.get(name, options.get("default"))
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title}}
    return prompt


# ---------------------------------------------------------------------------------------------------- graphs
def basic_graph(**sampler_widgets: Any) -> list[Node]:
    sampler = {"seed": 0, "steps": 30, "cfg": 5.0, "scheduler": "ddim", **sampler_widgets}
    return [
        Node(1, "XPortraitLoadModel", "Load X-Portrait Model", 0, 0, {"checkpoint": CHECKPOINT}),
        Node(2, "LoadImage", "Load source portrait", 0, 1, {"image": "source.png"}),
        Node(3, "LoadVideo", "Load driving video", 0, 2, {"file": "driving.mp4"}),
        Node(4, "GetVideoComponents", "Driving frames", 1, 2, links={"video": (3, 0)}),
        Node(5, "XPortraitReference", "X-Portrait Reference", 1, 0, links={"source": (2, 0), "vae": (1, 1)}),
        Node(6, "XPortraitMotionControl", "X-Portrait Motion Control", 2, 2,
             links={"driving": (4, 0), "source": (2, 0)}),
        Node(7, "XPortraitLocalPatches", "X-Portrait Local Patches", 3, 2, links={"motion": (6, 0)}),
        Node(8, "XPortraitSampler", "X-Portrait Sampler", 4, 0, sampler,
             links={"model": (1, 0), "reference": (5, 0), "motion": (6, 0), "local_patches": (7, 0)}),
        Node(9, "VAEDecode", "VAE Decode", 5, 0, links={"samples": (8, 0), "vae": (1, 1)}),
        Node(10, "CreateVideo", "Create Video", 6, 0, links={"images": (9, 0), "fps": (4, 2)}),
        Node(11, "SaveVideo", "Save Video", 7, 0, {"filename_prefix": "video/xportrait"}, links={"video": (10, 0)}),
        Node(12, "PreviewImage", "Motion preview", 3, 3, links={"images": (6, 2)}),
        Node(13, "PreviewImage", "Local patches preview", 4, 3, links={"images": (7, 1)}),
    ]


def fast_lcm_graph() -> list[Node]:
    nodes = basic_graph(steps=4, cfg=1.5, scheduler="lcm")
    nodes.append(Node(14, "XPortraitLoRA", "LCM-LoRA (SD1.5)", 3, 0, {"lora_name": LCM_LORA, "strength": 1.0}))
    _node(nodes, 8).links["lora"] = (14, 0)
    return nodes


def multi_reference_graph() -> list[Node]:
    nodes = basic_graph()
    nodes += [
        Node(14, "LoadImage", "Load extra reference 1", 0, 3, {"image": "reference_1.png"}),
        Node(15, "LoadImage", "Load extra reference 2", 0, 4, {"image": "reference_2.png"}),
        Node(16, "ImageBatch", "Extra references", 1, 3, links={"image1": (14, 0), "image2": (15, 0)}),
        Node(17, "XPortraitLandmarkProvider", "Face landmarks", 1, 4, {"provider": "dlib", "dlib_model": "bundled"}),
    ]
    _node(nodes, 5).links["extra_references"] = (16, 0)
    _node(nodes, 6).links["landmarks"] = (17, 0)
    _node(nodes, 7).links["landmarks"] = (17, 0)
    return nodes


def init_video_graph() -> list[Node]:
    nodes = basic_graph(start="init_video", denoise=0.6)
    nodes += [
        Node(14, "LoadVideo", "Load init video", 2, 4, {"file": "init.mp4"}),
        Node(15, "GetVideoComponents", "Init frames", 3, 4, links={"video": (14, 0)}),
    ]
    _node(nodes, 8).links["init_images"] = (15, 0)
    return nodes


def guider_graph() -> list[Node]:
    """X-Portrait through the core sampling nodes: X-Portrait Guider -> SamplerCustomAdvanced with KSamplerSelect,
    BasicScheduler on the guider's schedule and RandomNoise (whose seed also draws the window offsets)."""
    return [
        Node(1, "XPortraitLoadModel", "Load X-Portrait Model", 0, 0, {"checkpoint": CHECKPOINT}),
        Node(2, "LoadImage", "Load source portrait", 0, 1, {"image": "source.png"}),
        Node(3, "LoadVideo", "Load driving video", 0, 2, {"file": "driving.mp4"}),
        Node(4, "GetVideoComponents", "Driving frames", 1, 2, links={"video": (3, 0)}),
        Node(5, "XPortraitReference", "X-Portrait Reference", 1, 0, links={"source": (2, 0), "vae": (1, 1)}),
        Node(6, "XPortraitMotionControl", "X-Portrait Motion Control", 2, 2,
             links={"driving": (4, 0), "source": (2, 0)}),
        Node(7, "XPortraitLocalPatches", "X-Portrait Local Patches", 3, 2, links={"motion": (6, 0)}),
        Node(8, "XPortraitGuider", "X-Portrait Guider", 3, 0, {"cfg": 5.0},
             links={"model": (1, 0), "reference": (5, 0), "motion": (6, 0), "local_patches": (7, 0)}),
        Node(9, "KSamplerSelect", "Core sampler", 4, 1, {"sampler_name": "dpmpp_2m"}),
        Node(10, "BasicScheduler", "Core schedule", 4, 2, {"scheduler": "karras", "steps": 20, "denoise": 1.0},
             links={"model": (8, 1)}),
        Node(11, "RandomNoise", "Noise and window offsets", 4, 3, {"noise_seed": 0}),
        Node(12, "SamplerCustomAdvanced", "SamplerCustomAdvanced", 5, 0,
             links={"noise": (11, 0), "guider": (8, 0), "sampler": (9, 0), "sigmas": (10, 0),
                    "latent_image": (8, 2)}),
        Node(13, "VAEDecode", "VAE Decode", 6, 0, links={"samples": (12, 0), "vae": (1, 1)}),
        Node(14, "CreateVideo", "Create Video", 7, 0, links={"images": (13, 0), "fps": (4, 2)}),
        Node(15, "SaveVideo", "Save Video", 8, 0, {"filename_prefix": "video/xportrait_guider"},
             links={"video": (14, 0)}),
    ]


WORKFLOWS = {
    "xportrait_basic": basic_graph,
    "xportrait_fast_lcm": fast_lcm_graph,
    "xportrait_multi_reference": multi_reference_graph,
    "xportrait_init_video": init_video_graph,
    "xportrait_guider": guider_graph,
}
API_WORKFLOWS = {"xportrait_basic_api": basic_graph, "xportrait_guider_api": guider_graph}


def main() -> None:
    for name, graph in WORKFLOWS.items():
        (OUT_DIR / f"{name}.json").write_text(json.dumps(ui_workflow(graph()), indent=1) + "\n")
    for name, graph in API_WORKFLOWS.items():
        (OUT_DIR / f"{name}.json").write_text(json.dumps(api_workflow(graph()), indent=1) + "\n")


if __name__ == "__main__":
    main()
