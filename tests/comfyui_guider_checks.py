"""The X-Portrait Guider inside a real ComfyUI's sampling code, in-process: run by tests/test_comfyui_guider.py with
ComfyUI's Python (`COMFYUI_PYTHON path/to/this.py`); prints one JSON object of measurements on its last line.

The node functions are called as the server calls them (V1 node methods, under torch.inference_mode): the pack's
Guider, Sampler and LoRA nodes, and the core SamplerCustomAdvanced, KSamplerSelect, BasicScheduler, KarrasScheduler,
AlignYourStepsScheduler, SplitSigmas, RandomNoise, DisableNoise, KSampler and LoraLoaderModelOnly. In-process because
the golden comparisons need the golden model and exact start latents, which no core loader node can bring into a
server; likewise the core SD1.5-architecture model beside X-Portrait is built small here, because ComfyUI's
checkpoint detection (comfy/model_detection.py) finds no supported model in a tiny SD1.5 file.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
PACK_ROOT = TESTS.parent
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.path.append(str(TESTS))

from comfy.cli_args import LatentPreviewMethod, args  # noqa: E402

args.cpu = True  # before comfy.model_management picks a device
args.preview_method = LatentPreviewMethod.Latent2RGB  # previews through the core callback, as --preview-method auto

import comfy.model_management as mm  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402,F401  (the pack's host detects ComfyUI by its modules)
from comfy_extras.nodes_align_your_steps import AlignYourStepsScheduler  # noqa: E402
from comfy_extras.nodes_custom_sampler import (  # noqa: E402
    BasicScheduler,
    DisableNoise,
    KarrasScheduler,
    KSamplerSelect,
    RandomNoise,
    SamplerCustomAdvanced,
    SplitSigmas,
)
from conftest import GOLDEN_DIR, GOLDEN_TEXT_HEADS, golden_hints  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import nodes as core_nodes  # noqa: E402

GOLDEN_FRAMES = 20
GOLDEN_STEPS = 4
GOLDEN_SEED = 1239  # Python's random.Random(1239) draws 2, 8, 14, 0 for 20 frames: the shared-reference run's offsets
EULER_STEPS = 2  # the pack's euler visits t = 501, 1; ddim_uniform with 2 steps gives the same sigmas
EULER_SEED = 4
FRAMES = 16
SMALL_RESOLUTION = 128  # the tiny random model's size (smaller latents leave its deepest blocks too small)
TO_Q_KOHYA = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # a layer of the tiny UNets
LCM_STYLE_RANK = 4
# A core SD1.5-architecture UNet as small as the tiny X-Portrait one (what comfy/supported_models.py SD15 builds).
TINY_CORE_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                  "legacy": False, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
                  "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "channel_mult": [1, 2],
                  "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
                  "num_heads": 8, "num_head_channels": -1, "adm_in_channels": None, "use_temporal_attention": False,
                  "use_temporal_resblock": False}
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_sde",
            "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm", "ipndm", "deis", "res_multistep", "er_sde",
            "ddim", "uni_pc", "uni_pc_bh2"]


def load_pack():
    spec = importlib.util.spec_from_file_location("xportrait_pack", PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["xportrait_pack"] = pack
    spec.loader.exec_module(pack)
    return pack


PACK = load_pack()
host = importlib.import_module("xportrait_pack.nodes.host")
Guider = PACK.NODE_CLASS_MAPPINGS["XPortraitGuider"]
Sampler = PACK.NODE_CLASS_MAPPINGS["XPortraitSampler"]

from xportrait_core import pipeline  # noqa: E402
from xportrait_core.model.checkpoint import load_model  # noqa: E402
from xportrait_core.model.lora import LoraChoice  # noqa: E402
from xportrait_core.model.schedule import ddpm_schedule  # noqa: E402
from xportrait_core.model.tiny_model import build_random_model  # noqa: E402
from xportrait_core.networks.unet_key_map import diffusers_to_ldm_unet_names  # noqa: E402
from xportrait_core.sampling import sampler  # noqa: E402
from xportrait_core.sampling.guidance import WindowedGuidedDenoiser  # noqa: E402


class RecordingDenoiser(WindowedGuidedDenoiser):
    """The windowed denoiser (the guider's and the Sampler's), remembered so the checks can read its calls and
    offsets."""

    last = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingDenoiser.last = self


sampler.WindowedGuidedDenoiser = RecordingDenoiser  # what sampler.guided_denoiser builds, for both nodes


def golden(name):
    return load_file(str(GOLDEN_DIR / f"{name}.safetensors"))


def as_image(hints_fchw):
    return pipeline.images_of_hints(hints_fchw)


def guider_for(managed, reference_latent, pose, local, cfg=5.0, lora=()):
    scale = managed.model.config.vae.scale_factor
    reference = pipeline.References(latents=(reference_latent / scale,),
                                    images=torch.zeros(1, pose.shape[-1], pose.shape[-1], 3))
    return Guider().guide(managed, reference, as_image(pose), as_image(local), cfg, 16, 4, "random", lora=lora)


def advanced(noise, guider, sampler_name, sigmas, latent):
    sampler = KSamplerSelect().get_sampler(sampler_name)[0]
    return SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)


def max_abs(a, b):
    return float((a.float() - b.float()).abs().max())


# --------------------------------------------------------------------------------------------- golden DDIM
def check_golden_ddim(managed):
    """core ddim + ddim_uniform, 4 steps, seed 1239 (the golden offsets), against the golden windowed DDIM run.

    The golden start x_T is noised to t = 999 but first evaluated at t = 751; the core starts at latent + sigma_751 *
    noise. So the start latent given is x_T * sqrt(sigma_751^2 + 1) minus the seed's noise times sigma_751: the
    network then sees exactly x_T. ddim_uniform ends at sigma 0, i.e. the last step returns its x0 estimate, where the
    original's last DDIM step goes to alphas_cumprod[0]."""
    run = golden("sampling_cfg5_shared_reference")
    pose, local = golden_hints(golden, range(GOLDEN_FRAMES))
    scale = managed.model.config.vae.scale_factor
    guider, schedule, _ = guider_for(managed, run["image_control"][:1], pose, local)
    sigmas = BasicScheduler().get_sigmas(schedule, "ddim_uniform", GOLDEN_STEPS, 1.0)[0]
    noise = RandomNoise().get_noise(GOLDEN_SEED)[0]
    seed_noise = comfy.sample.prepare_noise(run["x_T"], GOLDEN_SEED)
    start = run["x_T"] * (sigmas[0] ** 2 + 1) ** 0.5 - sigmas[0] * seed_noise
    output, denoised = advanced(noise, guider, "ddim", sigmas, {"samples": start / scale})
    calls, offsets = RecordingDenoiser.last.calls, RecordingDenoiser.last.offsets_used
    result = output["samples"] * scale

    a = ddpm_schedule().alphas_cumprod
    golden_x0 = (run["x_per_step"][2] - (1 - a[1]).sqrt() * run["eps_per_step"][3]) / a[1].sqrt()
    # The original's last step from this x0 with its eps, to a_prev = alphas_cumprod[0]:
    to_alphas_cumprod_0 = a[0].sqrt() * result + (1 - a[0]).sqrt() * run["eps_per_step"][3]

    # The same run with the schedule ending at the sigma of alphas_cumprod[0] instead of 0 (a SIGMAS tensor no core
    # scheduler node makes): its result in variance-preserving form is the golden final latents themselves.
    sigma_0 = float(((1 - a[0]) / a[0]).sqrt())
    to_sigma_0 = torch.cat([sigmas[:-1], torch.tensor([sigma_0])])
    guider, _, _ = guider_for(managed, run["image_control"][:1], pose, local)
    ended, _ = advanced(noise, guider, "ddim", to_sigma_0, {"samples": start / scale})
    ended_vp = ended["samples"] * scale / (sigma_0**2 + 1) ** 0.5
    return {
        "sigmas": sigmas.tolist(), "timesteps": [t for _, t in calls], "steps": [s for s, _ in calls],
        "offsets": offsets, "golden_offsets": run["offsets"].tolist(),
        "max_abs_vs_golden_x0": max_abs(result, golden_x0),
        "max_abs_vs_golden_final_latents": max_abs(result, run["final_latents"]),
        "max_abs_vs_golden_final_after_the_alphas_cumprod_0_step": max_abs(to_alphas_cumprod_0, run["final_latents"]),
        "max_abs_sigma_0_end_vs_golden_final_latents": max_abs(ended_vp, run["final_latents"]),
        "denoised_output_equals_output": max_abs(denoised["samples"], output["samples"]),
    }


# ------------------------------------------------------------------------------------------ euler vs pack
def check_euler_equals_pack(managed):
    run = golden("sampling_cfg5_shared_reference")
    pose, local = golden_hints(golden, range(FRAMES))
    scale = managed.model.config.vae.scale_factor
    reference_latent = run["image_control"][:1]
    reference = pipeline.References(latents=(reference_latent / scale,),
                                    images=torch.zeros(1, pose.shape[-1], pose.shape[-1], 3))
    pack = Sampler().sample(managed, reference, as_image(pose), as_image(local), seed=EULER_SEED, steps=EULER_STEPS,
                            cfg=5.0, scheduler="euler", window=16, overlap=4, window_placement="random",
                            start="reference", denoise=1.0)[0]
    guider, schedule, start_latent = guider_for(managed, reference_latent, pose, local)
    sigmas = BasicScheduler().get_sigmas(schedule, "ddim_uniform", EULER_STEPS, 1.0)[0]
    output, _ = advanced(RandomNoise().get_noise(EULER_SEED)[0], guider, "euler", sigmas, start_latent)
    return {"timesteps": [t for _, t in RecordingDenoiser.last.calls],
            "max_abs_scaled": max_abs(output["samples"] * scale, pack["samples"] * scale),
            "max_abs_unscaled": max_abs(output["samples"], pack["samples"])}


# --------------------------------------------------------------------------------- composition (small model)
def small_inputs():
    generator = torch.Generator().manual_seed(0)
    latent = SMALL_RESOLUTION // 8
    reference_latent = torch.randn(1, 4, latent, latent, generator=generator)
    pose = torch.rand(FRAMES, 3, SMALL_RESOLUTION, SMALL_RESOLUTION, generator=generator) * 2 - 1
    local = torch.rand(FRAMES, 3, SMALL_RESOLUTION, SMALL_RESOLUTION, generator=generator) * 2 - 1
    return reference_latent, pose, local


def finite_run(managed, sampler_name, sigmas, noise=None, latent=None, cfg=2.0):
    reference_latent, pose, local = small_inputs()
    guider, _, start_latent = guider_for(managed, reference_latent, pose, local, cfg=cfg)
    output, _ = advanced(noise or RandomNoise().get_noise(1)[0], guider, sampler_name, sigmas, latent or start_latent)
    calls = RecordingDenoiser.last.calls
    return {"finite": bool(torch.isfinite(output["samples"]).all()), "shape": list(output["samples"].shape),
            "calls": len(calls), "steps": len({s for s, _ in calls}),
            "offsets": len(RecordingDenoiser.last.offsets_used)}


def check_samplers(managed, schedule):
    sigmas = BasicScheduler().get_sigmas(schedule, "karras", 3, 1.0)[0]
    return {name: finite_run(managed, name, sigmas) for name in SAMPLERS}


def check_schedules(managed, schedule):
    results = {name: finite_run(managed, "euler", BasicScheduler().get_sigmas(schedule, name, 3, 1.0)[0])
               for name in comfy.samplers.SCHEDULER_NAMES}
    results["KarrasScheduler"] = finite_run(managed, "euler", KarrasScheduler().get_sigmas(3, 14.614642, 0.0291675,
                                                                                             7.0)[0])
    results["AlignYourStepsScheduler"] = finite_run(managed, "dpmpp_2m",
                                                    AlignYourStepsScheduler().get_sigmas("SD1", 3, 1.0)[0])
    low = SplitSigmas().get_sigmas(BasicScheduler().get_sigmas(schedule, "normal", 6, 1.0)[0], 3)[1]
    latent = SMALL_RESOLUTION // 8
    init = {"samples": torch.randn(FRAMES, 4, latent, latent, generator=torch.Generator().manual_seed(2))}
    results["SplitSigmas img2img"] = finite_run(managed, "euler", low, latent=init)
    results["DisableNoise img2img"] = finite_run(managed, "euler", low, noise=DisableNoise().get_noise()[0],
                                                 latent=init)
    return results


# ------------------------------------------------------------------------------------- LoRA, Cancel, errors
def unet_weights(managed):
    return {k: v.clone() for k, v in managed.model.unet.state_dict().items()}


def restored(before, managed):
    """The LoRA patches stay on the networks while their patcher clone is loaded; loading the model's own patcher
    (what the next run without that LoRA does) takes them off from core's backups: the weights must be exact."""
    mm.load_models_gpu([managed.patcher])
    after = managed.model.unet.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before)


def check_lora_cancel_and_errors(managed, lora_path, schedule):
    reference_latent, pose, local = small_inputs()
    lora = (LoraChoice(str(lora_path), 1.0),)
    sigmas = BasicScheduler().get_sigmas(schedule, "normal", 2, 1.0)[0]
    noise = RandomNoise().get_noise(3)[0]
    before = unet_weights(managed)
    results = {}

    plain = advanced(noise, guider_for(managed, reference_latent, pose, local)[0], "euler", sigmas,
                     guider_for(managed, reference_latent, pose, local)[2])[0]
    guider, _, start = guider_for(managed, reference_latent, pose, local, lora=lora)
    with_lora = advanced(noise, guider, "euler", sigmas, start)[0]
    results["lora_changes_the_result"] = max_abs(plain["samples"], with_lora["samples"])
    results["weights_restored_after_a_run"] = restored(before, managed)

    mm.interrupt_current_processing(True)
    try:
        advanced(noise, guider, "euler", sigmas, start)
        results["cancel"] = "not interrupted"
    except mm.InterruptProcessingException:
        results["cancel"] = "interrupted"
    finally:
        mm.interrupt_current_processing(False)
    results["weights_restored_after_cancel"] = restored(before, managed)

    try:
        advanced(noise, guider, "euler_cfg_pp", sigmas, start)
        results["cfg_pp_error"] = None
    except ValueError as error:
        results["cfg_pp_error"] = str(error)
    results["weights_restored_after_an_error"] = restored(before, managed)

    try:
        advanced(noise, guider, "euler", sigmas, {"samples": torch.zeros(FRAMES + 1, 4, 8, 8)})
        results["latent_mismatch_error"] = None
    except ValueError as error:
        results["latent_mismatch_error"] = str(error)

    schedule_model = guider_for(managed, reference_latent, pose, local)[1]
    text = [[torch.zeros(1, 77, managed.model.config.unet.context_dim), {}]]
    try:
        core_nodes.KSampler().sample(schedule_model, 0, 1, 7.0, "euler", "normal", text, text,
                                     {"samples": torch.zeros(1, 4, 8, 8)})
        results["ksampler_error"] = None
    except RuntimeError as error:
        results["ksampler_error"] = str(error)
    return results


def lcm_style_lora(model, path):
    """A kohya LoRA on every >= 2-D layer of the UNet, as LCM-LoRA covers attention, feed-forward, proj_in/out,
    ResBlock convs, time embedding, conv_in/out and the resamplers; small values, fixed seed."""
    weights = model.unet.state_dict()
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    for diffusers_name, ldm_name in diffusers_to_ldm_unet_names().items():
        weight = weights.get(f"{ldm_name}.weight")
        if weight is None or weight.dim() < 2:
            continue
        kohya = "lora_unet_" + diffusers_name.replace(".", "_")
        tensors[f"{kohya}.lora_down.weight"] = torch.randn(LCM_STYLE_RANK, *weight.shape[1:], generator=generator)
        tensors[f"{kohya}.lora_up.weight"] = 0.05 * torch.randn(weight.shape[0], LCM_STYLE_RANK,
                                                                *([1] * (weight.dim() - 2)), generator=generator)
        tensors[f"{kohya}.alpha"] = torch.tensor(float(LCM_STYLE_RANK))
    save_file(tensors, str(path))
    return len(tensors) // 3


def lcm_template_sampler(managed, lora):
    """The LCM template's X-Portrait Sampler settings (4 steps, cfg 1.5, scheduler lcm) on the small inputs."""
    reference_latent, pose, local = small_inputs()
    scale = managed.model.config.vae.scale_factor
    reference = pipeline.References(latents=(reference_latent / scale,),
                                    images=torch.zeros(1, SMALL_RESOLUTION, SMALL_RESOLUTION, 3))
    return Sampler().sample(managed, reference, as_image(pose), as_image(local), seed=0, steps=4, cfg=1.5,
                            scheduler="lcm", window=16, overlap=4, window_placement="random", start="reference",
                            denoise=1.0, lora=lora)[0]["samples"]


def check_lora_patches_equal_the_merge(managed, workdir):
    """The LCM template's LoRA as core patches (inside ComfyUI) against the merge the command line keeps
    (StandaloneHost's), on the same networks: the same result within fp32 noise; exact weights afterwards."""
    from xportrait_pack.nodes.standalone_host import StandaloneHost

    path = workdir / "lcm_style_lora.safetensors"
    layers = lcm_style_lora(managed.model, path)
    lora = (LoraChoice(str(path), 1.0),)
    before = unet_weights(managed)
    patched = lcm_template_sampler(managed, lora)
    exact_after_patches = restored(before, managed)
    comfy_host = host.current
    host.current = StandaloneHost  # the merge path, on the networks core just restored
    try:
        merged = lcm_template_sampler(managed, lora)
    finally:
        host.current = comfy_host
    plain = lcm_template_sampler(managed, ())
    return {"layers": layers, "patches_vs_merge_max_abs": max_abs(patched, merged),
            "lora_changes_the_result": max_abs(patched, plain), "weights_exact_after_patches": exact_after_patches,
            "weights_exact_after_merge": restored(before, managed)}


def check_core_lora_model_beside_xportrait(managed, lora_path, schedule):
    """A core SD1.5-architecture model with a LoRA from core LoraLoaderModelOnly, sampled by core KSampler between
    two X-Portrait guider runs: both models run, the core LoRA changes the core model's result, and X-Portrait's
    result is the same as without the other model."""
    import comfy.model_patcher
    import comfy.supported_models

    folder_paths.add_model_folder_path("loras", str(lora_path.parent))
    core_model = comfy.supported_models.SD15(dict(TINY_CORE_UNET)).get_model({})
    generator = torch.Generator().manual_seed(5)
    for parameter in core_model.parameters():  # comfy.ops layers skip initialisation: a loader fills them
        parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    core = comfy.model_patcher.ModelPatcher(core_model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())
    with_lora = core_nodes.LoraLoaderModelOnly().load_lora_model_only(core, lora_path.name, 1.0)[0]
    reference_latent, pose, local = small_inputs()
    sigmas = BasicScheduler().get_sigmas(schedule, "normal", 2, 1.0)[0]

    def xportrait():
        guider, _, start = guider_for(managed, reference_latent, pose, local)
        return advanced(RandomNoise().get_noise(9)[0], guider, "euler", sigmas, start)[0]["samples"]

    def core_ksampler(model):
        text = [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(4)), {}]]
        return core_nodes.KSampler().sample(model, 1, 2, 5.0, "euler", "normal", text, text,
                                            {"samples": torch.zeros(1, 4, 8, 8)})[0]["samples"]

    alone = xportrait()
    core_plain = core_ksampler(core)
    core_patched = core_ksampler(with_lora)
    beside = xportrait()
    return {"core_lora_patches": len(with_lora.patches), "core_finite": bool(torch.isfinite(core_patched).all()),
            "core_lora_changes_the_core_result": max_abs(core_plain, core_patched),
            "xportrait_beside_vs_alone_max_abs": max_abs(alone, beside)}


def check_previews(managed, schedule):
    """The core callback: one progress update per sampler step, each with a preview image."""
    updates = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append(
        (value, total, preview is not None)))
    try:
        reference_latent, pose, local = small_inputs()
        guider, _, start = guider_for(managed, reference_latent, pose, local)
        advanced(RandomNoise().get_noise(5)[0], guider, "dpmpp_2m",
                 BasicScheduler().get_sigmas(schedule, "karras", 3, 1.0)[0], start)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    return updates


def main(workdir: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    golden_model, _ = load_model(GOLDEN_DIR / "tiny_weights.safetensors", precision="fp32", attention_backend="sdpa",
                                 text_num_heads=GOLDEN_TEXT_HEADS)
    seam = host.current()
    golden_managed = seam.manage(golden_model, "golden tiny")
    small = seam.manage(build_random_model(seed=0), "random tiny")
    lora_path = workdir / "tiny_lora.safetensors"
    generator = torch.Generator().manual_seed(3)
    save_file({f"{TO_Q_KOHYA}.lora_down.weight": torch.randn(2, 32, generator=generator),
               f"{TO_Q_KOHYA}.lora_up.weight": torch.randn(32, 2, generator=generator)}, str(lora_path))
    with torch.inference_mode():
        schedule = guider_for(small, *small_inputs())[1]
        report = {
            "golden_ddim": check_golden_ddim(golden_managed),
            "euler_vs_pack": check_euler_equals_pack(golden_managed),
            "samplers": check_samplers(small, schedule),
            "schedules": check_schedules(small, schedule),
            "lora_cancel_errors": check_lora_cancel_and_errors(small, lora_path, schedule),
            "previews": check_previews(small, schedule),
            "lora_patches_vs_merge": check_lora_patches_equal_the_merge(small, workdir),
            "core_model_beside": check_core_lora_model_beside_xportrait(small, lora_path, schedule),
        }
    (workdir / "report.json").write_text(json.dumps(report, indent=1))  # kept with the run's logs
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
