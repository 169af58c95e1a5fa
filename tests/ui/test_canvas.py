"""The example templates in ComfyUI's real web frontend (1.27.10 with ComfyUI 0.3.64), driven in headless Chromium the
way an artist meets them: each template is dropped onto the canvas in a 1366 x 768 window (the stored view and what
the minimap covers are measured there), saved with Ctrl+S, given a real portrait and a real driving video in its
loaders, fitted to the view and measured; then run with the tiny model and live previews on (the server runs with
--preview-method auto, as the README recommends) and measured again, fitted to a 1366 x 768 and to a 1920 x 1080
window, with screenshots.

XPORTRAIT_FRONTEND_ROOT=<a frontend's static folder>[:<another>...] runs everything again against each of those
frontends (the server's --front-end-root), e.g. the newest comfyui-frontend-package unpacked outside the repo.

Skipped unless COMFYUI_PATH points to a ComfyUI checkout (like tests/test_comfyui_integration.py), and when Chromium,
Node.js or playwright-core are missing. Needs: Debian's `chromium` (or XPORTRAIT_CHROMIUM=/path/to/chromium),
`node`, and playwright-core installed with npm outside the repo (XPORTRAIT_PLAYWRIGHT_CORE=<its package folder>; no
browser download). Screenshots go to XPORTRAIT_UI_ARTIFACTS (default: a pytest temporary folder, printed).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_workflows import MAIN_PATH_EXCLUDES

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
PACK_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = PACK_ROOT / "example_workflows"
TEMPLATES = sorted(TEMPLATES_DIR.glob("*.json"))
DRIVER = Path(__file__).parent / "canvas_check.mjs"
CHROMIUM = os.environ.get("XPORTRAIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
PLAYWRIGHT_CORE = os.environ.get("XPORTRAIT_PLAYWRIGHT_CORE", "")
BUNDLED = "1.27.10"  # the frontend ComfyUI 0.3.64 pins (requirements.txt: comfyui-frontend-package)
FRONTENDS = [BUNDLED] + [root for root in os.environ.get("XPORTRAIT_FRONTEND_ROOT", "").split(os.pathsep) if root]
CANVAS = {"1366x768": [1326, 728], "1920x1080": [1880, 1040]}  # the graph canvas of each window (frontend 1.27.10)
MIN_FIT_ZOOM = 0.6  # the goal; the frontend draws text down to 8 / 14 = 0.571 (measured below)
DRIVER_TIMEOUT_S = 3000
PORTRAIT, DRIVING = "astronaut.png", "astronaut_moves.mp4"
TINY = {"checkpoint": "tiny.safetensors", "lora": "tiny_lora.safetensors", "resolution": 128, "steps": 2}
TO_Q_KOHYA = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # a layer of the tiny UNet
SIZES = ("1366x768", "1920x1080")
OLDER_BASIC = "basic animation saved before driving_crop"

pytestmark = [
    pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run"),
    pytest.mark.skipif(not (CHROMIUM and NODE), reason="needs chromium and node (Debian: apt-get install chromium)"),
    pytest.mark.skipif(not (Path(PLAYWRIGHT_CORE) / "index.mjs").is_file(),
                       reason="set XPORTRAIT_PLAYWRIGHT_CORE to playwright-core's folder "
                              "(npm install playwright-core)"),
]


def frontend_label(root: str) -> str:
    found = re.search(r"\d+\.\d+\.\d+", root)
    return found.group(0) if found else Path(root).name


@pytest.fixture(scope="module", params=FRONTENDS, ids=lambda root: frontend_label(root))
def frontend(request, tmp_path_factory):
    """The driver's report for every template, measured against a fresh ComfyUI with this pack and the tiny model,
    serving the frontend it pins or the one in the given folder."""
    import torch
    from safetensors.torch import save_file

    from tests.real_media import write_driving_clip, write_portrait
    from tests.test_comfyui_integration import PACK_LINK_NAME, Server
    from xportrait_core.model.checkpoint import save_model_checkpoint
    from xportrait_core.model.tiny_model import build_random_model

    label = frontend_label(request.param)
    base = tmp_path_factory.mktemp("comfyui_ui_base")
    for folder in ("custom_nodes", "input", "output", "temp", "user", "models/xportrait", "models/loras"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    save_model_checkpoint(build_random_model(seed=0), base / "models" / "xportrait" / TINY["checkpoint"])
    save_file({f"{TO_Q_KOHYA}.lora_down.weight": torch.randn(2, 32),
               f"{TO_Q_KOHYA}.lora_up.weight": torch.randn(32, 2)}, str(base / "models" / "loras" / TINY["lora"]))
    media = tmp_path_factory.mktemp("ui_media")
    server = Server(base, extra_args=[] if request.param == BUNDLED else ["--front-end-root", request.param])
    server.start()
    try:
        set_setting(server, "Comfy.TutorialCompleted", True)  # no "pick a template" dialog on a fresh user
        portrait = server.upload(write_portrait(media / PORTRAIT))
        driving = server.upload(write_driving_clip(media / DRIVING, frames=16, fps=8))
        artifacts = Path(os.environ.get("XPORTRAIT_UI_ARTIFACTS") or tmp_path_factory.mktemp("ui_screenshots"))
        artifacts.mkdir(parents=True, exist_ok=True)
        job = {"url": server.url, "chromium": CHROMIUM, "playwrightCore": PLAYWRIGHT_CORE, "artifacts": str(artifacts),
               "portrait": portrait, "video": driving, "serverLog": str(server.log_path), "label": label,
               "tiny": TINY, "templates": [{"name": path.stem, "file": str(path)} for path in TEMPLATES],
               "olderGraphs": [{"name": OLDER_BASIC, "file": str(media / f"{OLDER_BASIC}.json")}]}
        (media / f"{OLDER_BASIC}.json").write_text(json.dumps(basic_graph_before_driving_crop()))
        job_file = media / "job.json"
        job_file.write_text(json.dumps(job))
        run = subprocess.run([NODE, str(DRIVER), str(job_file)], capture_output=True, text=True,
                             timeout=DRIVER_TIMEOUT_S)
        assert run.returncode == 0, run.stderr[-4000:]
        report = json.loads(run.stdout)
        (artifacts / f"report {label}.json").write_text(json.dumps(report, indent=1))
        print(f"UI screenshots and report in {artifacts}")
        print_summary(label, report["reports"])
        yield ({entry["name"]: entry for entry in report["reports"]}, report["templatesBrowser"], label,
               {entry["name"]: entry for entry in report["olderGraphs"]})
    finally:
        server.stop()


def basic_graph_before_driving_crop() -> dict:
    """The basic template as saved before Motion Control had its last widget, driving_crop."""
    graph = json.loads((TEMPLATES_DIR / "X-Portrait basic animation.json").read_text())
    motion_control = next(node for node in graph["nodes"] if node["type"] == "XPortraitMotionControl")
    motion_control["inputs"] = [entry for entry in motion_control["inputs"] if entry["name"] != "driving_crop"]
    assert motion_control["widgets_values"].pop() == "full_frame"
    return graph


def print_summary(label: str, reports: list[dict]) -> None:
    """Per template and window: the fit zoom after the run, whether text is drawn there, overlaps; the stored view."""
    for entry in reports:
        if "error" in entry:
            print(f"[{label}] {entry['name']}: the driver failed: {entry['error'][:2000]}")
            continue
        stored = entry["storedView"]
        print(f"[{label}] {entry['name']}: stored view {stored['scale']:.3f} (text "
              f"{'not drawn' if stored['lowQuality'] else 'drawn'}, minimap covers {stored['minimapCovers']}, "
              f"cut text {len(stored['cutText'])}, off the canvas {stored['offCanvas']}); "
              f"run {entry['run']['status']} in {entry['run']['seconds']:.0f} s")
        for size, after in entry["afterRun"].items():
            measured = after["measured"]
            more = after.get("fitWithTwoMoreNodes")
            grown = f", with two more nodes {more['scale']:.3f} (added at {more['added']})" if more else ""
            print(f"[{label}]   {size}: fit zoom {measured['scale']:.3f} (text "
                  f"{'not drawn' if measured['lowQuality'] else 'drawn'}, below {measured['lowQualityBelow']}){grown}, "
                  f"overlaps {measured['overlaps']}, links under nodes {len(measured['linksUnder'])}")


def set_setting(server, key: str, value: object) -> None:
    import urllib.request

    request = urllib.request.Request(f"{server.url}/api/settings/{key}", data=json.dumps(value).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def _reports(frontend):
    return frontend[0]


def _by_id(nodes, key):
    """node id -> node[key]; frontend 1.58.1 reports ids as strings."""
    return {int(node["id"]): node[key] for node in nodes}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_the_driver_measured_the_template(frontend, path):
    assert "error" not in _reports(frontend)[path.stem], _reports(frontend)[path.stem].get("error")


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_the_template_loads_by_drop_without_a_missing_node_dialog(frontend, path):
    report = _reports(frontend)[path.stem]
    assert report["dialogsAfterLoad"] == []
    assert [node["type"] for node in report["loaded"]["nodes"] if node["unknown"]] == []
    assert len(report["loaded"]["nodes"]) == len(json.loads(path.read_text())["nodes"])


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_console_errors_come_from_the_pack(frontend, path):
    """After the drop, the only errors are the frontend failing to preview the template's placeholder file names
    (which its Note names); picking real files adds none, and neither does running the template with any message
    about the pack. Start-up errors are the frontend's own (user.css, a fresh user's settings) and never mention
    the pack."""
    report = _reports(frontend)[path.stem]
    placeholders = {node["widgets_values"][0] for node in json.loads(path.read_text())["nodes"]
                    if node["type"] in ("LoadImage", "LoadVideo")}
    for error in report["consoleErrors"]:
        where = f"{error['phase']}: {error['text']} {error['url']}"
        if error["phase"] in ("startup", "run"):
            assert "xportrait" not in where.lower(), where
            continue
        assert error["phase"] == "load" and "/api/view?" in error["url"], where
        assert any(f"filename={name}&" in error["url"] for name in placeholders), where


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_widget_values_are_as_in_the_file(frontend, path):
    report = _reports(frontend)[path.stem]
    in_file = {node["id"]: node["widgets_values"] for node in json.loads(path.read_text())["nodes"]}
    assert _by_id(report["loaded"]["nodes"], "widgets") == in_file


def test_a_graph_saved_before_motion_controls_driving_crop_opens_with_full_frame(frontend):
    """driving_crop is Motion Control's last widget: an older graph keeps every value it has and gets full_frame."""
    older = frontend[3][OLDER_BASIC]
    assert older["dialogs"] == []
    # the only console errors are the previews of its placeholder files, as for the templates
    assert not [error for error in older["consoleErrors"] if "xportrait" in (error["text"] + error["url"]).lower()]
    in_file = {node["id"]: node["widgets_values"] for node in basic_graph_before_driving_crop()["nodes"]}
    motion_control = next(node["id"] for node in older["loaded"]["nodes"] if node["type"] == "XPortraitMotionControl")
    in_file[int(motion_control)].append("full_frame")
    assert _by_id(older["loaded"]["nodes"], "widgets") == in_file


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_saving_it_in_the_editor_changes_nothing(frontend, path):
    """Byte for byte the same JSON with the frontend the files are written for; another frontend writes its own
    format (1.58.1 adds widgets_values_named, drops group font sizes and empty widget lists) but keeps every node
    where it was, at its size, and every link."""
    saved, in_file = _reports(frontend)[path.stem]["saved"], json.loads(path.read_text())
    if frontend[2] == BUNDLED:
        assert saved == in_file
        return
    placed = {node["id"]: (node["type"], node["pos"], node["size"]) for node in in_file["nodes"]}
    assert {int(node["id"]): (node["type"], node["pos"], node["size"]) for node in saved["nodes"]} == placed
    assert saved["links"] == in_file["links"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_nodes_overlap_and_none_grows_after_picking_a_portrait_and_a_video(frontend, path):
    report = _reports(frontend)[path.stem]
    assert report["measured"]["overlaps"] == []
    sizes = {node["id"]: node["size"] for node in json.loads(path.read_text())["nodes"]}
    assert _by_id(report["afterPicking"]["nodes"], "size") == sizes
    assert not any(node["textHidden"] for node in report["afterPicking"]["nodes"])  # the Note shows all its text


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_no_link_runs_under_a_node_after_picking(frontend, path):
    assert _reports(frontend)[path.stem]["measured"]["linksUnder"] == []


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_it_runs_with_live_previews(frontend, path):
    run = _reports(frontend)[path.stem]["run"]
    assert run["status"] == "success", run
    assert "execution_success" in run["messages"]


def test_the_lora_merge_is_logged_once_per_run(frontend):
    """Issue 21 item 5: the LCM template applies one LoRA (as core patches inside ComfyUI), and the server's log
    says so once."""
    assert _reports(frontend)["X-Portrait fast animation (LCM LoRA)"]["run"]["loraMerges"] == 1


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_after_a_run_no_node_has_grown_over_another_and_no_link_runs_under_one(frontend, path, size):
    """The live latent preview, the previews and the saved video arrived: every node kept the size it has in the
    file (its room was there), none overlaps another, no link runs under a node."""
    after = _reports(frontend)[path.stem]["afterRun"][size]
    sizes = {node["id"]: node["size"] for node in json.loads(path.read_text())["nodes"]}
    assert _by_id(after["nodes"], "size") == sizes
    assert after["measured"]["overlaps"] == []
    assert after["measured"]["linksUnder"] == []


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_fit_view_draws_text_exactly_when_the_zoom_is_above_the_frontends_threshold(frontend, path, size):
    measured = _reports(frontend)[path.stem]["afterRun"][size]["measured"]
    assert measured["canvas"] == CANVAS[size] or frontend[2] != BUNDLED
    if measured["lowQualityBelow"] is not None:  # the frontend's own level-of-detail threshold (8 px / 14 px)
        assert measured["lowQuality"] == (measured["scale"] < measured["lowQualityBelow"])


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_fit_view_on_a_1080p_screen_keeps_text_readable_after_a_run(frontend, path):
    measured = _reports(frontend)[path.stem]["afterRun"]["1920x1080"]["measured"]
    assert measured["scale"] >= MIN_FIT_ZOOM and not measured["lowQuality"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_fit_view_on_a_1080p_screen_has_room_for_two_more_nodes(frontend, path):
    """Two core nodes added in columns to the right of the graph: Fit View still draws text at 0.6 or more."""
    grown = _reports(frontend)[path.stem]["afterRun"]["1920x1080"]["fitWithTwoMoreNodes"]
    assert len(grown["added"]) == 2 and grown["scale"] >= MIN_FIT_ZOOM


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_the_stored_view_on_a_laptop_cuts_no_text_and_the_minimap_covers_no_widgets(frontend, path):
    stored = _reports(frontend)[path.stem]["storedView"]
    assert stored["cutText"] == []
    assert stored["minimap"] is not None  # on by default
    if frontend[2] == BUNDLED:  # 1.58.1 moved the minimap (see tools/canvas_layout.py); reported, not required
        assert stored["minimapCovers"] == []


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_the_stored_view_on_a_laptop_shows_the_main_path_readable(frontend, path):
    """At 0.6 or more, with the title and widgets of every node but the previews and the Note on the canvas."""
    stored = _reports(frontend)[path.stem]["storedView"]
    main_path = {node["id"] for node in json.loads(path.read_text())["nodes"] if node["type"] not in MAIN_PATH_EXCLUDES}
    assert stored["scale"] >= MIN_FIT_ZOOM and not stored["lowQuality"]
    assert not main_path & set(stored["offCanvas"])


def test_the_templates_browser_lists_every_template_with_its_thumbnail_and_nothing_else(frontend):
    cards = frontend[1]
    assert sorted(card["name"] for card in cards) == [path.stem for path in TEMPLATES]
    for card in cards:
        assert card["isUiWorkflow"] and card["thumbnailStatus"] == 200 and card["thumbnailType"] == "image/jpeg", card
