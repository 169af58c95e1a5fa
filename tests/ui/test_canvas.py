"""The example templates in ComfyUI's real web frontend (1.27.10 with ComfyUI 0.3.64), driven in headless Chromium the
way an artist meets them: each template is dropped onto the canvas, saved with Ctrl+S, given a real portrait and a
real driving video in its loaders, fitted to the view of a 1920 x 1080 window, measured and photographed.

Skipped unless COMFYUI_PATH points to a ComfyUI checkout (like tests/test_comfyui_integration.py), and when Chromium,
Node.js or playwright-core are missing. Needs: Debian's `chromium` (or XPORTRAIT_CHROMIUM=/path/to/chromium),
`node`, and playwright-core installed with npm outside the repo (XPORTRAIT_PLAYWRIGHT_CORE=<its package folder>; no
browser download). Screenshots go to XPORTRAIT_UI_ARTIFACTS (default: a pytest temporary folder, printed).
XPORTRAIT_WRITE_THUMBNAILS=1 also writes each template's thumbnail (example_workflows/<template>.jpg) from its
screenshot.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
PACK_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = PACK_ROOT / "example_workflows"
TEMPLATES = sorted(TEMPLATES_DIR.glob("*.json"))
DRIVER = Path(__file__).parent / "canvas_check.mjs"
CHROMIUM = os.environ.get("XPORTRAIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
PLAYWRIGHT_CORE = os.environ.get("XPORTRAIT_PLAYWRIGHT_CORE", "")
CANVAS_1080P = [1856, 1002]  # the graph canvas of a 1920 x 1080 window (side bar and top bars take the rest)
MIN_FIT_ZOOM = 0.6  # below this the frontend draws nodes without their text
DRIVER_TIMEOUT_S = 1200
PORTRAIT, DRIVING = "astronaut.png", "astronaut_moves.mp4"
THUMBNAIL_SIZE = (512, 384)  # the Templates browser shows 4:3 cards
THUMBNAIL_MARGIN = 20  # screen pixels kept around the graph
THUMBNAIL_QUALITY = 85

pytestmark = [
    pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run"),
    pytest.mark.skipif(not (CHROMIUM and NODE), reason="needs chromium and node (Debian: apt-get install chromium)"),
    pytest.mark.skipif(not (Path(PLAYWRIGHT_CORE) / "index.mjs").is_file(),
                       reason="set XPORTRAIT_PLAYWRIGHT_CORE to playwright-core's folder "
                              "(npm install playwright-core)"),
]


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    """The driver's report for every template, measured against a fresh ComfyUI with this pack."""
    from tests.real_media import write_driving_clip, write_portrait
    from tests.test_comfyui_integration import PACK_LINK_NAME, Server

    base = tmp_path_factory.mktemp("comfyui_ui_base")
    for folder in ("custom_nodes", "input", "output", "temp", "user"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    media = tmp_path_factory.mktemp("ui_media")
    server = Server(base)
    server.start()
    try:
        set_setting(server, "Comfy.TutorialCompleted", True)  # no "pick a template" dialog on a fresh user
        set_setting(server, "Comfy.Minimap.Visible", False)  # the minimap and the canvas menu would cover the
        set_setting(server, "Comfy.Graph.CanvasMenu", False)  # graph in screenshots
        portrait = server.upload(write_portrait(media / PORTRAIT))
        driving = server.upload(write_driving_clip(media / DRIVING, frames=16, fps=8))
        artifacts = Path(os.environ.get("XPORTRAIT_UI_ARTIFACTS") or tmp_path_factory.mktemp("ui_screenshots"))
        artifacts.mkdir(parents=True, exist_ok=True)
        job = {"url": server.url, "chromium": CHROMIUM, "playwrightCore": PLAYWRIGHT_CORE, "artifacts": str(artifacts),
               "portrait": portrait, "video": driving,
               "templates": [{"name": path.stem, "file": str(path)} for path in TEMPLATES]}
        job_file = media / "job.json"
        job_file.write_text(json.dumps(job))
        run = subprocess.run([NODE, str(DRIVER), str(job_file)], capture_output=True, text=True,
                             timeout=DRIVER_TIMEOUT_S)
        assert run.returncode == 0, run.stderr[-4000:]
        report = json.loads(run.stdout)
        print(f"UI screenshots in {artifacts}")
        if os.environ.get("XPORTRAIT_WRITE_THUMBNAILS"):
            for entry in report["reports"]:
                write_thumbnail(entry, TEMPLATES_DIR / f"{entry['name']}.jpg")
        yield {entry["name"]: entry for entry in report["reports"]}, report["templatesBrowser"], server
    finally:
        server.stop()


def set_setting(server, key: str, value: object) -> None:
    import urllib.request

    request = urllib.request.Request(f"{server.url}/api/settings/{key}", data=json.dumps(value).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def write_thumbnail(entry: dict, path: Path) -> None:
    """The fitted graph cut from its screenshot (groups and nodes, a small margin, nothing outside the canvas),
    centred on a 4:3 card of the canvas's own background, as a JPEG."""
    from PIL import Image

    measured = entry["measured"]
    scale, (offset_x, offset_y), (page_x, page_y) = measured["scale"], measured["offset"], measured["canvasOnPage"]
    left, top, right, bottom = measured["bounds"]
    canvas_box = (page_x, page_y, page_x + measured["canvas"][0], page_y + measured["canvas"][1])
    box = (max(canvas_box[0], page_x + (left + offset_x) * scale - THUMBNAIL_MARGIN),
           max(canvas_box[1], page_y + (top + offset_y) * scale - THUMBNAIL_MARGIN),
           min(canvas_box[2], page_x + (right + offset_x) * scale + THUMBNAIL_MARGIN),
           min(canvas_box[3], page_y + (bottom + offset_y) * scale + THUMBNAIL_MARGIN))
    with Image.open(entry["screenshot"]) as screenshot:
        picture = screenshot.convert("RGB")
    background = picture.getpixel((round(canvas_box[0]) + 2, round(canvas_box[3]) - 2))
    graph = picture.crop(tuple(round(v) for v in box))
    graph.thumbnail(THUMBNAIL_SIZE, Image.LANCZOS)
    card = Image.new("RGB", THUMBNAIL_SIZE, background)
    card.paste(graph, ((THUMBNAIL_SIZE[0] - graph.width) // 2, (THUMBNAIL_SIZE[1] - graph.height) // 2))
    card.save(path, "JPEG", quality=THUMBNAIL_QUALITY)


def _reports(frontend):
    return frontend[0]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_the_template_loads_by_drop_without_a_missing_node_dialog(frontend, path):
    report = _reports(frontend)[path.stem]
    assert report["dialogsAfterLoad"] == []
    assert [node["type"] for node in report["loaded"]["nodes"] if node["unknown"]] == []
    assert len(report["loaded"]["nodes"]) == len(json.loads(path.read_text())["nodes"])


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_console_errors_come_from_the_pack(frontend, path):
    """After the drop, the only errors are the frontend failing to preview the template's placeholder file names
    (which its Note names); picking real files adds none. Start-up errors are the frontend's own (user.css, a
    fresh user's settings) and never mention the pack."""
    report = _reports(frontend)[path.stem]
    placeholders = {node["widgets_values"][0] for node in json.loads(path.read_text())["nodes"]
                    if node["type"] in ("LoadImage", "LoadVideo")}
    for error in report["consoleErrors"]:
        where = f"{error['phase']}: {error['text']} {error['url']}"
        if error["phase"] == "startup":
            assert "xportrait" not in where.lower(), where
            continue
        assert error["phase"] == "load" and "/api/view?" in error["url"], where
        assert any(f"filename={name}&" in error["url"] for name in placeholders), where


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_widget_values_are_as_in_the_file(frontend, path):
    report = _reports(frontend)[path.stem]
    in_file = {node["id"]: node["widgets_values"] for node in json.loads(path.read_text())["nodes"]}
    assert {node["id"]: node["widgets"] for node in report["loaded"]["nodes"]} == in_file


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_saving_it_in_the_editor_changes_nothing(frontend, path):
    assert _reports(frontend)[path.stem]["saved"] == json.loads(path.read_text())


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_nodes_overlap_and_none_grows_after_picking_a_portrait_and_a_video(frontend, path):
    report = _reports(frontend)[path.stem]
    assert report["measured"]["overlaps"] == []
    sizes = {node["id"]: node["size"] for node in json.loads(path.read_text())["nodes"]}
    assert {node["id"]: node["size"] for node in report["afterPicking"]["nodes"]} == sizes
    assert not any(node["textHidden"] for node in report["afterPicking"]["nodes"])  # the Note shows all its text


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_link_runs_under_a_node(frontend, path):
    assert _reports(frontend)[path.stem]["measured"]["linksUnder"] == []


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_fit_view_on_a_1080p_screen_keeps_text_readable(frontend, path):
    measured = _reports(frontend)[path.stem]["measured"]
    print(f"{path.stem}: fit view zoom {measured['scale']:.3f}")
    assert measured["canvas"] == CANVAS_1080P
    assert measured["scale"] >= MIN_FIT_ZOOM


def test_the_templates_browser_lists_every_template_with_its_thumbnail_and_nothing_else(frontend):
    cards = frontend[1]
    assert sorted(card["name"] for card in cards) == [path.stem for path in TEMPLATES]
    for card in cards:
        assert card["isUiWorkflow"] and card["thumbnailStatus"] == 200 and card["thumbnailType"] == "image/jpeg", card
