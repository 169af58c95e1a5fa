"""Example graphs as files: the UI format exactly as ComfyUI's frontend 1.27.10 saves it, and the API format.

The frontend rewrites what it loads into its own shape when it saves (LGraph.serialize): every input listed, widget
inputs after socket inputs, optional sockets marked, a widget value kept even when the widget is linked, node titles
left out when they equal the node's display name, the execution order recomputed, a graph id and the view (extra.ds)
added. Writing that shape here means a load-and-save round trip in the editor changes nothing
(tests/ui/ checks it in the real frontend).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACK_ROOT = Path(__file__).resolve().parents[1]
CORE_OBJECT_INFO = PACK_ROOT / "tests" / "data" / "object_info_core.json"

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_CONTROL = "fixed"  # value the frontend stores after an INT input with control_after_generate
UPLOAD_INPUT = "upload"  # the upload button of LoadImage / LoadVideo is a widget input of this name
UPLOAD_INPUT_TYPE = "IMAGEUPLOAD"
UPLOAD_LABEL = "choose file to upload"  # its localized name in the frontend's English strings
UPLOAD_VALUE = "image"  # the value the frontend stores for that button
OPTIONAL_SHAPE = 7  # LiteGraph RenderShape.HollowCircle: how the frontend marks an optional socket
GRAPH_FORMAT_VERSION = 0.4  # LiteGraph.VERSION of frontend 1.27.10
NOTE_TYPE = "Note"  # the frontend's own text node (no server side)
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}  # the colours a new Note gets
GROUP_FONT_SIZE = 24
ID_NAMESPACE = uuid.UUID("6f1c3a52-52a4-4d0e-9a53-0d51b1b0a1e5")  # graph ids are uuid5(this, file name)


@dataclass
class Node:
    """One node of an example graph: widgets by input name, links as input name -> (source id, output slot)."""

    id: int
    type: str
    title: str | None = None  # None: the node's display name
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Definition:
    """What a node type looks like to the frontend, from /object_info or our INPUT_TYPES."""

    display_name: str
    inputs: tuple[tuple[str, tuple, bool], ...]  # (name, spec, required) in definition order
    outputs: tuple[tuple[str, str], ...]  # (name, type)

    def sockets(self) -> list[tuple[str, tuple, bool]]:
        return [entry for entry in self.inputs if not is_widget(entry[1])]

    def widget_inputs(self) -> list[tuple[str, tuple, bool]]:
        """Widget inputs in order, with the upload button after a file drop-down."""
        result = []
        for name, spec, required in self.inputs:
            if is_widget(spec):
                result.append((name, spec, required))
                if _options(spec).get("image_upload") or _options(spec).get("video_upload"):
                    result.append((UPLOAD_INPUT, (UPLOAD_INPUT_TYPE, {}), True))
        return result

    def widget_rows(self) -> list[str]:
        """Every widget row the node shows, including the seed's 'control after generate'."""
        rows = []
        for name, spec, _ in self.widget_inputs():
            rows.append(name)
            if _options(spec).get("control_after_generate"):
                rows.append("control_after_generate")
        return rows


def is_widget(spec: tuple | list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _options(spec: tuple | list) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def definitions() -> dict[str, Definition]:
    """Core nodes from the /object_info recorded from ComfyUI 0.3.64, ours from their live INPUT_TYPES."""
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    result = {}
    for name, info in json.loads(CORE_OBJECT_INFO.read_text()).items():
        inputs = tuple((n, tuple(info["input"][kind][n]), kind == "required")
                       for kind in ("required", "optional") for n in info["input_order"].get(kind, []))
        result[name] = Definition(info["display_name"], inputs, tuple(zip(info["output_name"], info["output"])))
    for name, cls in NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        inputs = tuple((n, tuple(spec), kind == "required")
                       for kind in ("required", "optional") for n, spec in types.get(kind, {}).items())
        result[name] = Definition(NODE_DISPLAY_NAME_MAPPINGS[name], inputs,
                                  tuple(zip(cls.RETURN_NAMES, cls.RETURN_TYPES)))
    return result


def graph_id(name: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, name))


# ----------------------------------------------------------------------------------------------------- UI format
def _input_type(spec: tuple) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _widget_value(node: Node, name: str, spec: tuple) -> Any:
    if name == UPLOAD_INPUT:
        return UPLOAD_VALUE
    return json_number(node.widgets.get(name, _options(spec).get("default")))


def json_number(value: Any) -> Any:
    """A whole float as an int: JSON has one number type and the frontend writes 5.0 as 5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def ui_inputs(node: Node, definition: Definition, link_ids: dict[tuple[int, str], int]) -> list[dict[str, Any]]:
    """The node's input list as the frontend saves it: sockets, then widget inputs."""
    entries = []
    for name, spec, required in definition.sockets():
        entry: dict[str, Any] = {"localized_name": name, "name": name}
        if not required:
            entry["shape"] = OPTIONAL_SHAPE
        entry.update(type=spec[0], link=link_ids.get((node.id, name)))
        entries.append(entry)
    for name, spec, required in definition.widget_inputs():
        entry = {"localized_name": UPLOAD_LABEL if name == UPLOAD_INPUT else name, "name": name}
        if not required:
            entry["shape"] = OPTIONAL_SHAPE  # optional widgets too (measured: ComfyUI_frontend 1.27's save)
        entry.update(type=_input_type(spec), widget={"name": name}, link=link_ids.get((node.id, name)))
        entries.append(entry)
    return entries


def widget_values(node: Node, definition: Definition) -> list[Any]:
    values = []
    for name, spec, _ in definition.widget_inputs():
        values.append(_widget_value(node, name, spec))
        if _options(spec).get("control_after_generate"):
            values.append(SEED_CONTROL)
    return values


def execution_order(nodes: list[Node]) -> dict[int, int]:
    """LiteGraph's computeExecutionOrder: nodes without linked inputs in list order, then each node once all its
    inputs' sources are placed (breadth first, links in output order)."""
    remaining = {node.id: len(node.links) for node in nodes}
    ready = [node.id for node in nodes if not node.links]
    targets: dict[int, list[int]] = {}
    for link_source, target in _links_by_output(nodes):
        targets.setdefault(link_source, []).append(target)
    order = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for target in targets.get(current, []):
            remaining[target] -= 1
            if remaining[target] == 0:
                ready.append(target)
    return {node_id: index for index, node_id in enumerate(order)}


def _links_by_output(nodes: list[Node]) -> list[tuple[int, int]]:
    """(source id, target id) per link, ordered by source output slot then link id, as outputs list them."""
    links = _numbered_links(nodes)
    return [(source, target) for _, source, _, target, _ in sorted(links, key=lambda link: (link[1], link[2], link[0]))]


def _numbered_links(nodes: list[Node]) -> list[tuple[int, int, int, int, str]]:
    """(link id, source id, output slot, target id, input name), numbered in node order then input order."""
    links = []
    for node in nodes:
        for input_name, (source, slot) in node.links.items():
            links.append((len(links) + 1, source, slot, node.id, input_name))
    return links


def ui_workflow(name: str, nodes: list[Node], sizes: dict[int, tuple[float, float, float, float]],
                groups: list[tuple[str, str, tuple[float, float, float, float]]], view: dict,
                known: dict[str, Definition]) -> dict[str, Any]:
    """sizes: node id -> (x, y, width, height); groups: (title, colour, bounding)."""
    links = _numbered_links(nodes)
    link_ids = {(target, input_name): link_id for link_id, _, _, target, input_name in links}
    order = execution_order(nodes)
    ui_nodes, input_slots = [], {}
    for node in nodes:
        x, y, width, height = sizes[node.id]
        entry: dict[str, Any] = {"id": node.id, "type": node.type, "pos": [x, y], "size": [width, height],
                                 "flags": {}, "order": order[node.id], "mode": 0}
        if node.type == NOTE_TYPE:
            entry.update(inputs=[], outputs=[])
            if node.title:
                entry["title"] = node.title
            entry.update(properties={}, widgets_values=[node.widgets["text"]], **NOTE_COLORS)
            ui_nodes.append(entry)
            continue
        definition = known[node.type]
        entry["inputs"] = ui_inputs(node, definition, link_ids)
        input_slots[node.id] = [item["name"] for item in entry["inputs"]]
        entry["outputs"] = [
            {"localized_name": output, "name": output, "type": kind, "slot_index": slot,
             "links": [link[0] for link in links if link[1] == node.id and link[2] == slot]}
            for slot, (output, kind) in enumerate(definition.outputs)]
        if node.title and node.title != definition.display_name:
            entry["title"] = node.title
        entry.update(properties={"Node name for S&R": node.type}, widgets_values=widget_values(node, definition))
        ui_nodes.append(entry)
    types = {node.id: known[node.type] for node in nodes if node.type != NOTE_TYPE}
    ui_links = [[link_id, source, slot, target, input_slots[target].index(input_name), types[source].outputs[slot][1]]
                for link_id, source, slot, target, input_name in links]
    ui_groups = [{"id": index + 1, "title": title, "bounding": list(bounding), "color": color,
                  "font_size": GROUP_FONT_SIZE, "flags": {}} for index, (title, color, bounding) in enumerate(groups)]
    return {"id": graph_id(name), "revision": 0, "last_node_id": max(node.id for node in nodes),
            "last_link_id": len(links), "nodes": ui_nodes, "links": ui_links, "groups": ui_groups, "config": {},
            "extra": {"ds": view}, "version": GRAPH_FORMAT_VERSION}


# ---------------------------------------------------------------------------------------------------- API format
def api_workflow(nodes: list[Node], known: dict[str, Definition]) -> dict[str, Any]:
    """What the editor's "Export (API)" writes for the graph (Notes are not part of a prompt)."""
    prompt = {}
    for node in nodes:
        if node.type == NOTE_TYPE:
            continue
        definition = known[node.type]
        inputs: dict[str, Any] = {}
        for name, spec, _ in definition.inputs:
            if name in node.links:
                source, slot = node.links[name]
                inputs[name] = [str(source), slot]
            elif is_widget(spec):
                inputs[name] = _widget_value(node, name, spec)
        title = node.title or definition.display_name
        prompt[str(node.id)] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}
    return prompt
