"""Writes every example graph from one description per graph: the UI templates (`example_workflows/<title>.json`,
listed by ComfyUI's Templates browser under the pack's name) and the API format for scripts and the batch queue
(`docs/api_workflows/`).

    python tools/build_workflows.py    # from the pack root

A graph is its nodes plus a layout: titled groups of canvas columns (canvas_layout.py computes positions from node
sizes); the files are written the way ComfyUI's frontend 1.27.10 saves them (workflow_format.py). Widget order comes
from our nodes' INPUT_TYPES and, for core nodes, tests/data/object_info_core.json (recorded from ComfyUI 0.3.64).
Thumbnails (`<title>.jpg` beside each template) are drawn by tools/draw_thumbnails.py. tests/test_workflows.py checks
the written files and that they are up to date; tests/ui/ runs them in the real frontend (docs/ui_tests.md).
"""
from __future__ import annotations

import json
import math
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLS_DIR = Path(__file__).resolve().parent
PACK_ROOT = TOOLS_DIR.parent
sys.path.insert(0, str(PACK_ROOT))
sys.path.insert(0, str(TOOLS_DIR))

from canvas_layout import (  # noqa: E402,E501
    Group,
    Layout,
    Link,
    Placed,
    Slots,
    arrange,
    links_under_nodes,
    opening_view,
    overlapping_nodes,
)
from workflow_format import (  # noqa: E402,E501
    NOTE_TYPE,
    SEED_CONTROL,
    UPLOAD_INPUT,
    Definition,
    Node,
    api_workflow,
    definitions,
    ui_workflow,
)

# ComfyUI lists every *.json directly in example_workflows/ as a template and serves the whole folder as static files,
# so it holds only the templates and their thumbnails; the API format, which the frontend cannot open, is a doc.
TEMPLATES_DIR = PACK_ROOT / "example_workflows"
API_DIR = PACK_ROOT / "docs" / "api_workflows"
CHECKPOINT = "model_state-415001.th"  # the file the X-Portrait release publishes (README "Model files")
LCM_LORA = "lcm_sd15.safetensors"
PORTRAIT = "your_portrait.png"
DRIVING_VIDEO = "your_driving.mp4"
PREVIEW_WIDTH = 220  # loaders and previews: wide enough for a picture that tells what it shows, no wider
NOTE_ID = 20
NOTE_WIDTH = 225
# A Note's text area in frontend 1.27.10: 10 px monospace (6 px a character, 11.2 px a line), 20 px narrower than
# the node (280 px at NOTE_WIDTH: 46 characters), inside 26 px of node margins and padding (measured in the browser).
NOTE_CHAR_WIDTH = 6
NOTE_TEXT_INSET = 20
NOTE_LINE_HEIGHT = 11.2
NOTE_MARGINS = 26
# Nodes that show a picture, by the kind of preview: loaders once a file is picked, previews and savers after a run,
# and samplers during one (the latent preview of --preview-method auto, which the README recommends). Room for it is
# reserved in every template, so that nothing grows over a neighbour while or after the graph runs.
PREVIEWS = {"LoadImage": "image", "LoadVideo": "video", "PreviewImage": "image", "SaveImage": "image",
            "SaveVideo": "video", "XPortraitSampler": "image", "SamplerCustomAdvanced": "image",
            "SamplerCustom": "image", "KSampler": "image", "KSamplerAdvanced": "image"}
FLOAT_DIGITS = 3  # the frontend shows a float widget's value with up to 3 decimals
# Group colours from the frontend's palette (LGraphCanvas.node_colors ... groupcolor).
BLUE, GREEN, PURPLE, BROWN = "#3f789e", "#8A8", "#a1309b", "#b06634"


@dataclass
class Canvas:
    """One example graph: its nodes, its groups of columns, and layout hints (node id -> input whose link should
    run straight, or None for none; node id -> nodes whose bottom it must stay below)."""

    nodes: list[Node]
    groups: list[Group]
    level: dict[int, str | None] = field(default_factory=dict)
    below: dict[int, tuple[int, ...]] = field(default_factory=dict)
    note_width: int = NOTE_WIDTH
    tops: dict[int, int] = field(default_factory=dict)  # node id -> lowest top of its body (see `arrange`)

    def node(self, node_id: int) -> Node:
        return next(node for node in self.nodes if node.id == node_id)


def note_node(text: str) -> Node:
    return Node(NOTE_ID, NOTE_TYPE, "Read me first", widgets={"text": text})


# ---------------------------------------------------------------------------------------------------- graphs
BASIC_NOTE = f"""Pick 3 files, then Run.
1. Load driving video: the motion to follow (its sound is kept).
2. Load source portrait: the face to animate.
3. Load X-Portrait Model: {CHECKPOINT} from github.com/bytedance/X-Portrait, in models/xportrait/."""


def basic_canvas(**sampler_widgets: Any) -> Canvas:
    sampler = {"seed": 0, "steps": 30, "cfg": 5.0, "scheduler": "ddim", **sampler_widgets}
    nodes = [
        Node(1, "XPortraitLoadModel", widgets={"checkpoint": CHECKPOINT}),
        Node(2, "LoadImage", "Load source portrait", {"image": PORTRAIT}),
        Node(3, "LoadVideo", "Load driving video", {"file": DRIVING_VIDEO}),
        Node(4, "GetVideoComponents", "Split driving video", links={"video": (3, 0)}),
        Node(5, "XPortraitReference", links={"source": (2, 0), "vae": (1, 1)}),
        Node(6, "XPortraitMotionControl", links={"driving": (4, 0), "source": (2, 0)}),
        Node(7, "XPortraitLocalPatches", links={"motion": (6, 0)}),
        Node(8, "XPortraitSampler", widgets=sampler,
             links={"model": (1, 0), "reference": (5, 0), "motion": (6, 0), "local_patches": (7, 0)}),
        Node(9, "VAEDecode", links={"samples": (8, 0), "vae": (1, 1)}),
        Node(10, "CreateVideo", links={"images": (9, 0), "audio": (4, 1), "fps": (4, 2)}),
        Node(11, "SaveVideo", widgets={"filename_prefix": "xportrait"}, links={"video": (10, 0)}),
        Node(12, "PreviewImage", "Motion preview", links={"images": (6, 2)}),
        note_node(BASIC_NOTE),
    ]
    # Six columns: inputs; model and split; Reference and Motion Control; Local Patches and the motion preview; VAE
    # Decode above the Sampler; Create Video above Save Video. The model's VAE and the driving video's sound and rate
    # run to their nodes above the X-Portrait nodes; the portrait's links pass under Split (its column is placed
    # first, so the portrait can be kept below it). The motion line (Motion Control -> Sampler) runs straight, Local
    # Patches just below it. Local Patches' own preview (eye and mouth patches) is left unconnected: its node would
    # widen the graph by a column.
    groups = [
        Group("Inputs", BLUE, {1: [1, 4], 0: [NOTE_ID, 2, 3]}),
        Group("X-Portrait", PURPLE, {2: [5, 6], 3: [7, 12], 4: [9, 8]}),
        Group("Output", BROWN, {5: [10, 11]}),
    ]
    level = {4: None, 5: "source", 6: "driving", 7: "motion", 8: "motion", 9: "vae", 10: None, 11: None, 12: None}
    below = {2: (4,)}
    return Canvas(nodes, groups, level, below)


LCM_NOTE = BASIC_NOTE.replace("Pick 3 files", "Pick 4 files") + f"""
4. LCM-LoRA (SD1.5): latent-consistency/lcm-lora-sdv1-5 (Hugging Face) saved as models/loras/{LCM_LORA}."""


def fast_lcm_canvas() -> Canvas:
    canvas = basic_canvas(steps=4, cfg=1.5, scheduler="lcm")
    canvas.nodes.append(Node(14, "XPortraitLoRA", "LCM-LoRA (SD1.5)", {"lora_name": LCM_LORA, "strength": 1.0}))
    canvas.node(8).links["lora"] = (14, 0)
    canvas.node(NOTE_ID).widgets["text"] = LCM_NOTE
    _group(canvas, "X-Portrait").columns[3].append(14)  # under the motion preview, below the links into the Sampler
    canvas.level[14] = None
    return canvas


EXTRA_REFERENCE = "your_photo_2.png"
MULTI_REFERENCE_NOTE = BASIC_NOTE.replace("Pick 3 files", "Pick 4 files") + """
4. Load extra reference: another photo of the same person."""


def multi_reference_canvas() -> Canvas:
    canvas = basic_canvas()
    canvas.nodes.append(Node(14, "LoadImage", "Load extra reference", {"image": EXTRA_REFERENCE}))
    canvas.node(5).links["extra_references"] = (14, 0)
    canvas.node(NOTE_ID).widgets["text"] = MULTI_REFERENCE_NOTE
    # the driving video on top and the two photos of the person under it, their links passing under Split; the Note
    # under Split, below those links
    _group(canvas, "Inputs").columns = {1: [1, 4, NOTE_ID], 0: [3, 2, 14]}
    canvas.level.update({2: None, 5: "source", 8: "reference", 14: None, NOTE_ID: None})
    canvas.below = {}
    return canvas


INIT_VIDEO = "your_init_video.mp4"
INIT_VIDEO_NOTE = BASIC_NOTE.replace("Pick 3 files", "Pick 4 files") + """
4. Load init video: the video to start from."""


def init_video_canvas() -> Canvas:
    canvas = basic_canvas(start="init_video", denoise=0.6)
    canvas.nodes += [
        Node(14, "LoadVideo", "Load init video", {"file": INIT_VIDEO}),
        Node(15, "GetVideoComponents", "Split init video", links={"video": (14, 0)}),
    ]
    canvas.node(8).links["init_images"] = (15, 0)
    canvas.node(NOTE_ID).widgets["text"] = INIT_VIDEO_NOTE
    # The init video goes into the Sampler only: its loader and Split sit under Motion Control and the motion preview,
    # with the Sampler's lower inputs.
    columns = _group(canvas, "X-Portrait").columns
    columns[2].append(14)
    columns[3].append(15)
    canvas.level.update({14: None, 15: "video"})
    return canvas


GUIDER_NOTE = BASIC_NOTE + "\n" + (  # one line: the Note wraps it
    "Sampling runs in core nodes: any sampler in Core sampler; steps in Core schedule (or BasicScheduler on the "
    "guider's schedule output, for other schedulers). The noise seed also places the windows.")


def guider_canvas() -> Canvas:
    """X-Portrait through the core sampling nodes: X-Portrait Guider -> SamplerCustomAdvanced with KSamplerSelect,
    BasicScheduler on the guider's schedule and RandomNoise (whose seed also draws the window offsets)."""
    canvas = basic_canvas()
    canvas.nodes = [node for node in canvas.nodes if node.id not in (8, 12, 13)]  # no Sampler, no previews
    canvas.nodes += [
        Node(8, "XPortraitGuider", widgets={"cfg": 5.0},
             links={"model": (1, 0), "reference": (5, 0), "motion": (6, 0), "local_patches": (7, 0)}),
        Node(14, "KSamplerSelect", "Core sampler", {"sampler_name": "dpmpp_2m"}),
        Node(15, "KarrasScheduler", "Core schedule", {"steps": 20, "sigma_max": 14.614642, "sigma_min": 0.0291675,
                                                       "rho": 7.0}),
        Node(16, "RandomNoise", "Noise and window offsets", {"noise_seed": 0}),
        Node(17, "SamplerCustomAdvanced", links={"noise": (16, 0), "guider": (8, 0), "sampler": (14, 0),
                                                  "sigmas": (15, 0), "latent_image": (8, 2)}),
    ]
    canvas.node(9).links["samples"] = (17, 0)
    canvas.node(11).widgets["filename_prefix"] = "xportrait_guider"
    canvas.node(NOTE_ID).widgets["text"] = GUIDER_NOTE
    # Six columns for a chain nine nodes deep from the driving video to the saved video, so its link turns back inside
    # a column three times: Split above the driving video, VAE Decode above SamplerCustomAdvanced, Create Video above
    # Save Video. The sound and rate run along the top to Create Video, the model's VAE straight to VAE Decode. The
    # model loader, Motion Control and the Note share the second column; the X-Portrait Guider sits with the core
    # nodes that sample with it. The settle rounds alone chase this graph's links down without end, so it starts from
    # node tops an annealing search found (tools/search_tops.py, which from no tops finds layouts as low), and
    # `arrange` checks them like any other layout.
    canvas.groups = [
        Group("Inputs", BLUE, {0: [4, 3, 2]}),
        Group("X-Portrait", PURPLE, {1: [1, 6, NOTE_ID], 2: [7, 5]}),
        Group("Sampling", PURPLE, {3: [8, 15, 16, 14], 4: [9, 17]}),
        Group("Output", BROWN, {5: [10, 11]}),
    ]
    canvas.level = {node.id: None for node in canvas.nodes}
    canvas.level.update({9: "vae", 10: "audio"})
    canvas.below = {}
    canvas.tops = {3: 318, 2: 778, 1: 286, 6: 518, NOTE_ID: 880, 7: 576, 5: 712, 8: 398, 15: 706, 16: 894, 14: 1034,
                   17: 642, 11: 386}
    return canvas


PICTURE = "your_picture.png"
FULL_PICTURE_NOTE = f"""Pick 3 files, then Run.
1. Load driving video: a phone video is fine; Motion Control follows the face in it (driving_crop track_face).
2. Load source picture: a whole photo or painting, at its full size.
3. Load X-Portrait Model: {CHECKPOINT} from github.com/bytedance/X-Portrait, in models/xportrait/.
Face Crop picks the largest face; set face to a number (0 = leftmost) or x,y for another.
The animation is pasted back into the whole picture."""


def full_picture_canvas() -> Canvas:
    """A face in a whole picture: Face Crop -> the X-Portrait graph -> Paste Back at the picture's size, with Motion
    Control following the driving face (driving_crop track_face; docs/face_framing.md). The Face Crop preview is left
    unconnected: as a node it makes the canvas too large to read at fit view."""
    sampler = {"seed": 0, "steps": 30, "cfg": 5.0, "scheduler": "ddim"}
    nodes = [
        Node(1, "XPortraitLoadModel", widgets={"checkpoint": CHECKPOINT}),
        Node(2, "LoadImage", "Load source picture", {"image": PICTURE}),
        Node(3, "LoadVideo", "Load driving video", {"file": DRIVING_VIDEO}),
        Node(4, "GetVideoComponents", "Split driving video", links={"video": (3, 0)}),
        Node(14, "XPortraitFaceCrop", links={"picture": (2, 0)}),
        Node(5, "XPortraitReference", links={"source": (14, 0), "vae": (1, 1)}),
        Node(6, "XPortraitMotionControl", widgets={"driving_crop": "track_face"},
             links={"driving": (4, 0), "source": (14, 0)}),
        Node(7, "XPortraitLocalPatches", links={"motion": (6, 0)}),
        Node(8, "XPortraitSampler", widgets=sampler,
             links={"model": (1, 0), "reference": (5, 0), "motion": (6, 0), "local_patches": (7, 0)}),
        Node(9, "VAEDecode", links={"samples": (8, 0), "vae": (1, 1)}),
        Node(16, "XPortraitPasteBack", links={"frames": (9, 0), "picture": (2, 0), "crop_record": (14, 1)}),
        Node(10, "CreateVideo", links={"images": (16, 0), "audio": (4, 1), "fps": (4, 2)}),
        Node(11, "SaveVideo", widgets={"filename_prefix": "xportrait"}, links={"video": (10, 0)}),
        note_node(FULL_PICTURE_NOTE),
    ]
    # Six columns for a chain nine nodes deep from the driving video to the saved video, with five links from the
    # inputs to the output nodes (the picture and the crop record to Paste Back, the model's VAE to VAE Decode, the
    # driving video's sound and rate to Create Video). The chain turns back inside a column three times: Local
    # Patches above Motion Control, Paste Back below VAE Decode, Save Video below Create Video. The long links run
    # above the Sampler, between Reference and Local Patches at the top and Motion Control at the bottom of their
    # column; the Note sits under the model loader. Motion Control follows the driving face itself (driving_crop
    # track_face), which keeps Track Face's column out of the graph. The tops are what `tools/search_tops.py "X-Portrait
    # in the full picture" --from-scratch --rise-cost 0.2` finds (straighter links weigh more than for the Guider
    # among these many long ones), and `arrange` checks them like any other layout.
    groups = [
        Group("Inputs", BLUE, {0: [2, 3], 1: [4, 14, 1, NOTE_ID]}),
        Group("X-Portrait", PURPLE, {2: [5, 7, 6], 3: [8]}),
        Group("Output", BROWN, {4: [9, 16], 5: [10, 11]}),
    ]
    level = {node.id: None for node in nodes}
    tops = {2: 782, 3: 1162, 4: 716, 14: 840, 1: 1044, NOTE_ID: 1276, 5: 463, 7: 644, 6: 1106, 8: 889, 9: 492,
            16: 777, 10: 647, 11: 1035}
    return Canvas(nodes, groups, level, tops=tops)


def _group(canvas: Canvas, title: str) -> Group:
    return next(group for group in canvas.groups if group.title == title)


WORKFLOWS: dict[str, Callable[[], Canvas]] = {
    "X-Portrait basic animation": basic_canvas,
    "X-Portrait fast animation (LCM LoRA)": fast_lcm_canvas,
    "X-Portrait with an extra reference photo": multi_reference_canvas,
    "X-Portrait from an init video": init_video_canvas,
    "X-Portrait with core samplers (Guider)": guider_canvas,
    "X-Portrait in the full picture": full_picture_canvas,
}
API_WORKFLOWS = {"xportrait_basic_api": basic_canvas, "xportrait_guider_api": guider_canvas,
                 "xportrait_full_picture_api": full_picture_canvas}


# ---------------------------------------------------------------------------------------------------- layout
def slots_of(definition: Definition) -> Slots:
    """What sizes a node of this definition on the canvas: its sockets, outputs and widget rows."""
    return Slots(tuple(name for name, _, _ in definition.sockets()), tuple(name for name, _ in definition.outputs),
                 tuple(definition.widget_rows()))


def placed_nodes(canvas: Canvas, known: dict[str, Definition]) -> dict[int, Placed]:
    """Each node's layout inputs: its slots, the preview it shows, its size and the canvas's hints for it."""
    result = {}
    for node in canvas.nodes:
        if node.type == NOTE_TYPE:
            per_line = (canvas.note_width - NOTE_TEXT_INSET) // NOTE_CHAR_WIDTH
            # one line more than the text needs: the browser wraps long words a little differently
            lines = 1 + sum(len(textwrap.wrap(line, per_line)) or 1 for line in node.widgets["text"].splitlines())
            result[node.id] = Placed(node.id, node.title, Slots((), (), ("text",)), width=canvas.note_width,
                                     height=math.ceil(lines * NOTE_LINE_HEIGHT + NOTE_MARGINS))
            continue
        definition = known[node.type]
        slots = slots_of(definition)
        title = node.title or definition.display_name
        preview = PREVIEWS.get(node.type)
        level_input = canvas.level.get(node.id, next(iter(node.links), None))
        level_with = None
        if level_input is not None:
            source, slot = node.links[level_input]
            level_with = (level_input, source, slot)
        result[node.id] = Placed(node.id, title, slots, preview, PREVIEW_WIDTH if preview else None,
                                 level_with=level_with, below=canvas.below.get(node.id, ()),
                                 widget_texts=widget_texts(node, definition))
    return result


def widget_texts(node: Node, definition: Definition) -> tuple[tuple[str, str], ...]:
    """(label, value as the frontend shows it) for each widget row drawn as a label beside a value."""
    texts = []
    for name, spec, _ in definition.widget_inputs():
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if name == UPLOAD_INPUT or options.get("multiline") or name in node.links:
            continue
        value = node.widgets.get(name, options.get("default"))
        shown = f"{value:.{FLOAT_DIGITS}f}" if spec[0] == "FLOAT" else str(value)
        texts.append((name, shown))
        if options.get("control_after_generate"):
            texts.append(("control after generate", SEED_CONTROL))
    return tuple(texts)


def graph_links(canvas: Canvas) -> list[Link]:
    return [Link(source, slot, node.id, input_name) for node in canvas.nodes
            for input_name, (source, slot) in node.links.items()]


def layout_of(canvas: Canvas, known: dict[str, Definition]) -> tuple[Layout, dict[int, Placed]]:
    placed = placed_nodes(canvas, known)
    return arrange(canvas.groups, placed, graph_links(canvas), canvas.tops), placed


def ui_file(name: str, canvas: Canvas, known: dict[str, Definition]) -> dict[str, Any]:
    layout, placed = layout_of(canvas, known)
    sizes = {box.node_id: (box.x, box.y, box.width, box.height) for box in layout.boxes.values()}
    return ui_workflow(name, canvas.nodes, sizes, layout.groups, opening_view(layout, placed), known)


def check_layout(name: str, canvas: Canvas, known: dict[str, Definition]) -> None:
    layout, placed = layout_of(canvas, known)
    problems = [f"nodes {a} and {b} overlap" for a, b in overlapping_nodes(layout.boxes.values())]
    problems += [f"the link into node {link.target}.{link.input_name} runs under node {under}"
                 for link, under in links_under_nodes(layout, placed, graph_links(canvas))]
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=1) + "\n")


def main() -> None:
    known = definitions()
    for folder in (TEMPLATES_DIR, API_DIR):
        folder.mkdir(exist_ok=True)
    for name, make in WORKFLOWS.items():
        canvas = make()
        check_layout(name, canvas, known)
        write_json(TEMPLATES_DIR / f"{name}.json", ui_file(name, canvas, known))
    for name, make in API_WORKFLOWS.items():
        write_json(API_DIR / f"{name}.json", api_workflow(make().nodes, known))


if __name__ == "__main__":
    main()
