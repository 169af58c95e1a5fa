"""nodes/host.py's ComfyUI side (`ComfyHost`), against stand-ins for the host modules it reads, with the behaviour
of ComfyUI 0.3.64 (folder_paths, comfy.model_management) and of newer releases read from their source (the file and
version for each is named below; docs/comfyui_compat.md has the list)."""
from __future__ import annotations

import sys
import types

import pytest

from nodes import host

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


class InterruptProcessingException(Exception):
    """Stand-in for comfy.model_management's exception of the same name."""


@pytest.fixture
def fake_comfyui(monkeypatch, tmp_path):
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path / "models")
    folder_paths.supported_pt_extensions = set(SUPPORTED_PT_EXTENSIONS)
    # extra_model_paths.yaml already added a folder for "xportrait" (with no extensions, as add_model_folder_path
    # creates entries)
    folder_paths.folder_names_and_paths = {"xportrait": (["/mnt/shared/xportrait"], set())}

    def add_model_folder_path(name, path, is_default=False):
        if name in folder_paths.folder_names_and_paths:
            folder_paths.folder_names_and_paths[name][0].append(path)
        else:
            folder_paths.folder_names_and_paths[name] = ([path], set())

    folder_paths.add_model_folder_path = add_model_folder_path
    management = types.ModuleType("comfy.model_management")
    management.interrupted = False

    def throw_exception_if_processing_interrupted():
        if management.interrupted:
            management.interrupted = False
            raise InterruptProcessingException()

    management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    comfy = types.ModuleType("comfy")
    comfy.model_management = management
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", management)
    return folder_paths, management


def test_the_host_is_chosen_once_standalone_outside_comfyui_and_comfyhost_inside(fake_comfyui, monkeypatch):
    from nodes.standalone_host import StandaloneHost

    monkeypatch.delitem(sys.modules, "folder_paths")
    host.current.cache_clear()
    try:
        assert host.in_comfyui() is False and isinstance(host.current(), StandaloneHost)
        monkeypatch.setitem(sys.modules, "folder_paths", fake_comfyui[0])
        assert host.current() is host.current() and isinstance(host.current(), StandaloneHost)  # once
        host.current.cache_clear()
        assert isinstance(host.current(), host.ComfyHost)
    finally:
        host.current.cache_clear()


def test_model_folders_keep_yaml_folders_and_take_pt_extensions_plus_th(fake_comfyui, tmp_path):
    folder_paths, _ = fake_comfyui
    host.ComfyHost().register_model_folders()
    folders, extensions = folder_paths.folder_names_and_paths["xportrait"]
    assert folders == ["/mnt/shared/xportrait", str(tmp_path / "models" / "xportrait")]
    assert extensions == SUPPORTED_PT_EXTENSIONS | {".th"}


def test_landmark_models_get_their_own_folder_listing_only_dat_files(fake_comfyui, tmp_path):
    folder_paths, _ = fake_comfyui
    host.ComfyHost().register_model_folders()
    assert folder_paths.folder_names_and_paths["xportrait_landmarks"] == (
        [str(tmp_path / "models" / "xportrait" / "landmarks")], {".dat"})


def test_the_interrupt_hook_raises_the_hosts_exception_when_cancel_was_pressed(fake_comfyui):
    _, management = fake_comfyui
    assert host.ComfyHost().check_interrupt() is False
    management.interrupted = True
    with pytest.raises(InterruptProcessingException):
        host.ComfyHost().check_interrupt()


def test_frame_progress_moves_one_comfyui_progress_bar_and_cancel_raises_the_hosts_exception(fake_comfyui,
                                                                                              monkeypatch):
    """The ProgressBar is made once, with the job's total, and moved to each absolute value reported."""
    _, management = fake_comfyui
    bars = []

    class ProgressBar:
        def __init__(self, total):
            self.total, self.updates = total, []
            bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.updates.append((value, total))

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setattr(sys.modules["comfy"], "utils", utils, raising=False)
    hooks = host.ComfyHost().frame_progress("X-Portrait Motion Control")
    for done in (4, 8, 10):
        hooks.on_progress(done, 10)
    assert [(bar.total, bar.updates) for bar in bars] == [(10, [(4, 10), (8, 10), (10, 10)])]
    assert hooks.should_interrupt() is False
    management.interrupted = True
    with pytest.raises(InterruptProcessingException):
        hooks.should_interrupt()
