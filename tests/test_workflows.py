"""The UI templates in example_workflows/ and the API-format graphs in docs/api_workflows/ against the node
definitions they use: our nodes' live INPUT_TYPES and the core nodes' /object_info recorded from ComfyUI 0.3.64
(tests/data/object_info_core.json); that they are what tools/build_workflows.py writes now; and the canvas rules the
builder promises (no overlapping nodes, no link under a node, fit view readable on 1920 x 1080, titled groups, a Note,
the driving video's sound passed on). tests/ui/ checks the same templates in the real frontend. Also: our INPUT_TYPES
still equal the /object_info a real ComfyUI served for them (tests/data/object_info_xportrait.json).

ComfyUI 0.3.64 (app/custom_node_manager.py:96-140) lists `<pack>/example_workflows/*.json` (no subfolders) as
templates and serves the whole folder, subfolders included, as static files under /api/workflow_templates/<pack>/;
it also accepts "example", "examples", "workflow" and "workflows", logging (at debug level) "consider renaming it to
'example_workflows'"."""
from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from xportrait_core.batch_queue.workflow import load_workflow, locate_workflow_inputs

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
TEMPLATES_DIR = ROOT / "example_workflows"
UI_WORKFLOWS = sorted(TEMPLATES_DIR.glob("*.json"))  # ComfyUI lists every *.json directly in it as a template
API_DIR = ROOT / "docs" / "api_workflows"
API_WORKFLOWS = sorted(API_DIR.glob("*.json"))
TOOLS = ROOT / "tools"
# The other folder names ComfyUI 0.3.64 serves as templates (app/custom_node_manager.py:96).
OTHER_TEMPLATE_FOLDERS = ("example", "examples", "workflow", "workflows")
BASIC = TEMPLATES_DIR / "X-Portrait basic animation.json"
NOTE = "Note"
MIN_FIT_ZOOM = 0.6  # below this zoom the frontend draws nodes without their text
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Drop-downs filled from model folders: their options depend on the machine, so only their presence is compared.
FILE_INPUTS = {("XPortraitLoadModel", "checkpoint"), ("XPortraitLoRA", "lora_name"),
               ("XPortraitLandmarkProvider", "dlib_model")}
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
sys.path.insert(0, str(TOOLS))  # canvas_layout, next to the builder
SEEDED_CLASS = {"xportrait_basic_api": "XPortraitSampler", "xportrait_guider_api": "RandomNoise",
                "xportrait_full_picture_api": "XPortraitSampler"}
UI_OF_API = {"xportrait_basic_api": "X-Portrait basic animation",
             "xportrait_guider_api": "X-Portrait with core samplers (Guider)",
             "xportrait_full_picture_api": "X-Portrait in the full picture"}
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
    assert all(node["type"] in known or node["type"] == NOTE for node in nodes.values())
    for link_id, source, slot, target, target_slot, link_type in workflow["links"]:
        output_type = known[nodes[source]["type"]]["output"][slot]
        target_input = nodes[target]["inputs"][target_slot]
        spec = dict((n, s) for n, s, _ in ordered_inputs(known[nodes[target]["type"]]))[target_input["name"]]
        assert output_type == link_type and target_input["link"] == link_id
        assert link_compatible(output_type, spec), f"link {link_id}: {output_type} into {target_input['name']}"


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_widget_values_follow_the_definitions(path):
    """Every widget has its value, linked or not (the frontend keeps a linked widget's value), in input order."""
    known = definitions()
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] == NOTE:
            continue
        linked = {entry["name"] for entry in node["inputs"] if entry.get("link") is not None}
        values = list(node["widgets_values"])
        for name, spec, required in ordered_inputs(known[node["type"]]):
            assert is_widget(spec) or not required or name in linked, f"{node['type']}: required {name} not linked"
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


def test_the_six_example_workflows_exist_with_readable_names():
    """The Templates browser of frontend 1.27.10 shows a pack template's file name as its title."""
    assert [p.stem for p in UI_WORKFLOWS] == ["X-Portrait basic animation", "X-Portrait fast animation (LCM LoRA)",
                                              "X-Portrait from an init video", "X-Portrait in the full picture",
                                              "X-Portrait with an extra reference photo",
                                              "X-Portrait with core samplers (Guider)"]


def test_the_templates_folder_holds_only_ui_templates_and_their_thumbnails():
    """ComfyUI serves all of example_workflows/ as static files: no code, no API graph, no subfolder sits there."""
    entries = sorted(TEMPLATES_DIR.iterdir())
    assert [path.name for path in entries] == sorted(name for path in UI_WORKFLOWS
                                                     for name in (path.name, path.with_suffix(".jpg").name))
    assert all(path.is_file() for path in entries)
    for path in UI_WORKFLOWS:
        workflow = json.loads(path.read_text())
        assert isinstance(workflow.get("nodes"), list) and workflow["version"] == 0.4, path.name


def test_the_api_graphs_live_with_the_docs_not_with_the_templates():
    assert [path.stem for path in API_WORKFLOWS] == ["xportrait_basic_api", "xportrait_full_picture_api",
                                                     "xportrait_guider_api"]
    assert not {path.name for path in API_WORKFLOWS} & {path.name for path in TEMPLATES_DIR.iterdir()}


def test_no_other_folder_is_served_as_templates():
    assert [name for name in OTHER_TEMPLATE_FOLDERS if (ROOT / name).exists()] == []


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_every_template_has_a_jpeg_thumbnail_beside_it(path):
    """The frontend asks for <template>.jpg next to the file (custom-node templates: mediaSubtype "jpg")."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"missing {thumbnail.name}: see docs/testing.md, 'UI tests', to make it"
    assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG


def test_the_fast_workflow_samples_with_lcm_few_steps_low_cfg_and_a_lora():
    workflow = json.loads((TEMPLATES_DIR / "X-Portrait fast animation (LCM LoRA).json").read_text())
    nodes = {n["type"]: n for n in workflow["nodes"]}
    seed, _, steps, cfg, scheduler = nodes["XPortraitSampler"]["widgets_values"][:5]
    assert (scheduler, steps <= 8, 1.0 <= cfg <= 2.0) == ("lcm", True, True)
    assert any(entry["name"] == "lora" and entry["link"] for entry in nodes["XPortraitSampler"]["inputs"])


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_the_output_video_gets_the_driving_videos_sound_and_rate(path):
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    sources = {}
    for _, source, slot, target, target_slot, _ in workflow["links"]:
        if nodes[target]["type"] == "CreateVideo":
            sources[nodes[target]["inputs"][target_slot]["name"]] = (nodes[source], slot)
    for name, slot in (("audio", 1), ("fps", 2)):
        node, used_slot = sources[name]
        assert (node["type"], used_slot) == ("GetVideoComponents", slot), name
        loader = next(nodes[link[1]] for link in workflow["links"] if link[3] == node["id"])
        assert loader["title"] == "Load driving video"


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_a_note_says_what_to_pick_and_where_the_files_come_from(path):
    workflow = json.loads(path.read_text())
    text = next(node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == NOTE)
    loaders = [node for node in workflow["nodes"] if node["type"] in ("LoadImage", "LoadVideo", "XPortraitLoadModel",
                                                                     "XPortraitLoRA")]
    for node in loaders:
        assert node.get("title", "Load X-Portrait Model") in text, node["type"]
    checkpoint = next(n for n in loaders if n["type"] == "XPortraitLoadModel")["widgets_values"][0]
    assert checkpoint == "model_state-415001.th" and checkpoint in text and "bytedance/X-Portrait" in text


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_sit_in_titled_groups(path):
    workflow = json.loads(path.read_text())
    titles = [group["title"] for group in workflow["groups"]]
    assert titles[0] == "Inputs" and "X-Portrait" in titles and "Output" in titles
    for node in workflow["nodes"]:
        x, y = node["pos"]
        width, height = node["size"]
        inside = [g for g in workflow["groups"]
                  if g["bounding"][0] <= x and x + width <= g["bounding"][0] + g["bounding"][2]
                  and g["bounding"][1] <= y - 30 and y + height <= g["bounding"][1] + g["bounding"][3]]
        assert len(inside) == 1, f"node {node['id']} is in {len(inside)} groups"


# ------------------------------------------------------------------------------------------------ the builder
@functools.cache
def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows", TOOLS / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_workflows"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_files_are_what_the_builder_writes_now():
    builder = _builder()
    known = builder.definitions()
    assert (builder.TEMPLATES_DIR, builder.API_DIR) == (TEMPLATES_DIR, API_DIR)
    for name, make in builder.WORKFLOWS.items():
        assert json.loads((TEMPLATES_DIR / f"{name}.json").read_text()) == builder.ui_file(name, make(), known), name
    for name, make in builder.API_WORKFLOWS.items():
        assert json.loads((API_DIR / f"{name}.json").read_text()) == builder.api_workflow(make().nodes, known)


# Issue 21 item 2 asks for a fit zoom of 0.6 on a 1366 x 768 window with every preview in place, or, where a template
# cannot get there, for a stored view that shows its main path at 0.6 there and a fit view that stays at 0.6 on
# 1920 x 1080 with room for two more nodes. None gets to the first: the graphs are 1200-1290 graph px high (the
# Sampler with its live preview is 634 px; above it run the model's VAE and the driving video's sound to the output
# nodes), and a 1366 x 768 canvas fits 910 at 0.6. All six meet the second, in six columns (1649-1721 px wide).
MAIN_PATH_EXCLUDES = {"Note", "PreviewImage"}  # secondary parts: they may lie a pan away on a laptop


@functools.cache
def _layout(name):
    builder = _builder()
    canvas, known = builder.WORKFLOWS[name](), builder.definitions()
    layout, placed = builder.layout_of(canvas, known)
    return builder, canvas, layout, placed


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_the_layout_keeps_nodes_apart_and_links_visible(name):
    import canvas_layout

    builder, canvas, layout, placed = _layout(name)
    assert canvas_layout.overlapping_nodes(layout.boxes.values()) == []
    assert canvas_layout.links_under_nodes(layout, placed, builder.graph_links(canvas)) == []


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_groups_do_not_overlap(name):
    """A group's box that reaches over another group's nodes takes them along when the artist drags it."""
    import canvas_layout

    _, _, layout, _ = _layout(name)
    assert canvas_layout.overlapping_groups(layout) == []


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_fit_view_on_1080p_keeps_text_readable(name):
    import canvas_layout

    _, _, layout, _ = _layout(name)
    assert canvas_layout.fit_view_zoom(layout, canvas_layout.CANVAS_1080P) >= MIN_FIT_ZOOM


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_fit_view_on_1080p_has_room_for_two_more_nodes(name):
    """Two more nodes in columns of their own to the right (an upscaler, a face restorer) still fit a 1920 x 1080
    window at zoom 0.6; tests/ui/ adds two core nodes in the browser and measures the same."""
    import canvas_layout

    _, _, layout, _ = _layout(name)
    assert canvas_layout.fit_view_zoom(layout, canvas_layout.CANVAS_1080P,
                                       extra_width=canvas_layout.ROOM_FOR_TWO_NODES) >= MIN_FIT_ZOOM


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
@pytest.mark.xfail(strict=True, reason="issue 21 item 2: the graphs are 1200-1290 px high, a laptop fits 910 at 0.6")
def test_fit_view_on_a_laptop_keeps_text_readable(name):
    import canvas_layout

    _, _, layout, _ = _layout(name)
    assert canvas_layout.fit_view_zoom(layout, canvas_layout.CANVAS_768P) >= MIN_FIT_ZOOM


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_the_stored_view_shows_the_main_path_readable_on_a_laptop(name):
    """Opened on a 1366 x 768 window the template shows from its top-left corner at zoom 0.6 or more, with the title
    and widgets of every node on the main path (loaders, the X-Portrait nodes, the video out) on the canvas and none
    of them under the minimap (on by default); only previews and the Note may lie a pan away."""
    import canvas_layout

    _, canvas, layout, placed = _layout(name)
    view = json.loads((TEMPLATES_DIR / f"{name}.json").read_text())["extra"]["ds"]
    assert view["scale"] >= MIN_FIT_ZOOM
    assert canvas_layout.under_minimap(layout, placed, view, canvas_layout.CANVAS_768P) == []
    main_path = {node.id for node in canvas.nodes if node.type not in MAIN_PATH_EXCLUDES}
    assert main_path & set(canvas_layout.off_canvas(layout, placed, view, canvas_layout.CANVAS_768P)) == set()
    left, top, _, _ = canvas_layout.fit_bounds(layout)
    assert (left + view["offset"][0]) * view["scale"] >= 0 and (top + view["offset"][1]) * view["scale"] >= 0


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_every_node_that_shows_a_picture_has_room_for_it(name):
    """Loaders once a file is picked, previews and savers after a run, samplers during one (latent previews): the
    frontend grows a node to fit its picture, over whatever lies below, unless the room is there."""
    import canvas_layout

    builder, canvas, layout, placed = _layout(name)
    pictured = [node for node in canvas.nodes if node.type in builder.PREVIEWS]
    assert {"XPortraitSampler", "SamplerCustomAdvanced"} & {node.type for node in pictured}
    for node in pictured:
        needed = placed[node.id].slots.min_height() + canvas_layout.PREVIEW_HEIGHT[builder.PREVIEWS[node.type]]
        assert layout.boxes[node.id].height >= needed, node.type


@pytest.mark.parametrize("name", sorted(_builder().WORKFLOWS))
def test_nodes_are_wide_enough_for_their_title_and_widget_labels_with_values(name):
    """The frontend cuts a title wider than the node less 60 px, and a widget's label when label, value and 90 px
    do not fit (LGraphNode.drawTitleText, BaseWidget.drawTruncatingText in frontend 1.27.10); tests/ui/ measures
    the same in the browser."""
    import canvas_layout

    _, _, layout, placed = _layout(name)
    for node_id, node in placed.items():
        width = layout.boxes[node_id].width
        assert canvas_layout.text_width(node.title, 14) + 60 <= width, node.title
        for label, value in node.widget_texts:
            assert canvas_layout.text_width(label, 12) + canvas_layout.text_width(value, 12) + 90 <= width, label


def test_the_text_width_table_is_arial():
    """A few widths checked against Arial's published advance widths (2048 units per em)."""
    import canvas_layout

    slack = canvas_layout.TEXT_SLACK  # room for frontend 1.58.1's slightly wider text
    assert canvas_layout.text_width("i", 2048) / slack == pytest.approx(455)
    assert canvas_layout.text_width("W", 2048) / slack == pytest.approx(1933)
    assert canvas_layout.text_width("SamplerCustomAdvanced", 14) / slack == pytest.approx(162.6, abs=0.1)


def test_the_guiders_sampling_group_holds_the_nodes_that_sample():
    """The X-Portrait Guider, the core nodes SamplerCustomAdvanced takes and VAE Decode of its output sit in one
    group, and no other node does."""
    workflow = json.loads((TEMPLATES_DIR / "X-Portrait with core samplers (Guider).json").read_text())
    group = next(group for group in workflow["groups"] if group["title"] == "Sampling")
    x, y, width, height = group["bounding"]
    inside = {node["type"] for node in workflow["nodes"]
              if x <= node["pos"][0] and node["pos"][0] + node["size"][0] <= x + width
              and y <= node["pos"][1] - 30 and node["pos"][1] + node["size"][1] <= y + height}
    assert inside == {"XPortraitGuider", "KSamplerSelect", "RandomNoise", "KarrasScheduler", "SamplerCustomAdvanced",
                      "VAEDecode"}


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_the_note_breaks_lines_only_between_sentences_or_items(path):
    workflow = json.loads(path.read_text())
    text = next(node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == NOTE)
    for line in text.splitlines():
        assert line.rstrip()[-1] in ".:!?", f"a line break inside a sentence after: {line!r}"


def test_the_layout_check_finds_a_node_on_a_link():
    """The check can fail: a node moved onto the straight vae link of the basic graph is reported."""
    import canvas_layout

    builder = _builder()
    canvas, known = builder.basic_canvas(), builder.definitions()
    layout, placed = builder.layout_of(canvas, known)
    vae_link = next(link for link in builder.graph_links(canvas) if (link.target, link.input_name) == (9, "vae"))
    reference = layout.boxes[5]
    middle = reference.x + reference.width / 2
    _, y_there = min(canvas_layout.link_points(vae_link, layout, placed), key=lambda point: abs(point[0] - middle))
    reference.y = y_there - reference.height / 2  # Reference moved up onto the link from the model loader's vae
    found = {(link.target, under) for link, under in canvas_layout.links_under_nodes(layout, placed,
                                                                                     builder.graph_links(canvas))}
    assert (9, 5) in found


def test_the_layout_starts_from_the_tops_given_and_still_clears_the_links():
    """A top that puts Local Patches of the basic graph under a link (here the one from Motion Control to the Sampler)
    is a starting point: the node is placed no higher, and the settle rounds move it below the link."""
    import canvas_layout

    builder = _builder()
    canvas, known = builder.basic_canvas(), builder.definitions()
    placed = builder.placed_nodes(canvas, known)
    links = builder.graph_links(canvas)
    untouched = canvas_layout.arrange(canvas.groups, placed, links)
    start = untouched.boxes[7].y + 2  # Local Patches sits level with the motion line; lower, the line crosses it
    layout = canvas_layout.arrange(canvas.groups, placed, links, tops={7: start})
    assert layout.boxes[7].y >= start
    assert canvas_layout.links_under_nodes(layout, placed, links) == []
    assert canvas_layout.links_under_nodes(canvas_layout.place(canvas.groups, placed, {7: start}), placed, links)


@pytest.mark.parametrize(("name", "rise_cost"), [("X-Portrait with core samplers (Guider)", 0.05),
                                                 ("X-Portrait in the full picture", 0.2)])
def test_the_tops_search_keeps_a_searched_layout_valid_and_no_higher(name, rise_cost):
    """tools/search_tops.py, started from the tops it found for a template (with the link weight it was run with),
    ends at tops just as valid and at most as high: it keeps the best layout it has seen, weighing each overlap or
    hidden link at far more than its height."""
    import canvas_layout
    import search_tops

    builder = _builder()
    canvas, known = builder.WORKFLOWS[name](), builder.definitions()
    start = builder.layout_of(canvas, known)[0]
    tops, left = search_tops.search(canvas, iterations=60, seed=3, rise_cost=rise_cost)
    canvas.tops = tops
    layout, placed = builder.layout_of(canvas, known)
    assert left == 0
    assert canvas_layout.links_under_nodes(layout, placed, builder.graph_links(canvas)) == []
    assert canvas_layout.fit_bounds(layout)[3] <= canvas_layout.fit_bounds(start)[3]


FRONTEND_WIDTHS = {"SamplerCustomAdvanced": 202.5}  # measured in ComfyUI_frontend 1.27.10: the width it grows to


def test_nodes_are_written_at_least_as_wide_as_the_frontend_makes_them():
    """A node narrower than its slot labels need is widened by the frontend on load, so the saved graph differs
    from the template (SamplerCustomAdvanced: its title is short, its "latent_image" and "denoised_output" long)."""
    builder = _builder()
    definitions = builder.definitions()
    for node_type, measured in FRONTEND_WIDTHS.items():
        definition = definitions[node_type]
        assert builder.slots_of(definition).min_width(definition.display_name) >= measured


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
    assert [workflow[n]["class_type"] for n in found.seed_nodes] == [SEEDED_CLASS[path.stem]]


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_each_api_workflow_is_its_ui_workflow_without_the_note(path):
    ui = json.loads((TEMPLATES_DIR / f"{UI_OF_API[path.stem]}.json").read_text())
    api = json.loads(path.read_text())
    assert sorted((str(n["id"]), n["type"]) for n in ui["nodes"] if n["type"] != NOTE) == \
        sorted((k, v["class_type"]) for k, v in api.items())


def test_the_guider_workflow_samples_with_core_nodes_from_the_guiders_start():
    workflow = json.loads((TEMPLATES_DIR / "X-Portrait with core samplers (Guider).json").read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    sampler = next(n for n in nodes.values() if n["type"] == "SamplerCustomAdvanced")
    sources = {entry["name"]: nodes[links[entry["link"]][1]]["type"] for entry in sampler["inputs"]}
    assert sources == {"noise": "RandomNoise", "guider": "XPortraitGuider", "sampler": "KSamplerSelect",
                       "sigmas": "KarrasScheduler", "latent_image": "XPortraitGuider"}


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


# ------------------------------------------------------------------------------------------------ thumbnails
CARD_SIZE = (128, 96)  # about what the Templates browser shows of a card on a laptop, halved again
# Two cards differ where a pixel differs by more than CARD_PIXEL_CHANGE (0-255) in a channel; at least this share of
# the card must (measured: 4.3 % between the basic and the LCM card, which share the pipeline picture).
CARD_PIXEL_CHANGE = 48
MIN_CARD_DIFFERENCE = 0.03


def _drawer():
    spec = importlib.util.spec_from_file_location("draw_thumbnails", TOOLS / "draw_thumbnails.py")
    module = importlib.util.module_from_spec(spec)
    _builder()  # the drawer takes the template names and colours from the builder
    spec.loader.exec_module(module)
    return module


def _pixels(image):
    import numpy as np

    return np.asarray(image.convert("RGB").resize(CARD_SIZE), dtype=np.float32)


def test_the_thumbnails_are_what_the_drawer_draws_now():
    from PIL import Image

    drawer = _drawer()
    for path in UI_WORKFLOWS:
        with Image.open(path.with_suffix(".jpg")) as stored:
            assert stored.size == drawer.SIZE, path.name
            difference = abs(_pixels(stored) - _pixels(drawer.thumbnail(path.stem))).mean()
        assert difference < 2, f"{path.with_suffix('.jpg').name}: run python tools/draw_thumbnails.py"


def test_the_thumbnails_tell_the_templates_apart_at_card_size():
    from PIL import Image

    cards = {}
    for path in UI_WORKFLOWS:
        with Image.open(path.with_suffix(".jpg")) as stored:
            cards[path.stem] = _pixels(stored)
    names = sorted(cards)
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            changed = (abs(cards[first] - cards[second]).max(axis=2) > CARD_PIXEL_CHANGE).mean()
            assert changed >= MIN_CARD_DIFFERENCE, (first, second, changed)
