"""The DDPM schedule and q_sample equal the original's to the bit."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xportrait_core.model.schedule import DDPM_TRAIN_STEPS, ddpm_schedule, q_sample

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    "name", ["betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"]
)
def test_schedule_buffer_equals_the_original_exactly(name):
    golden = load_file(GOLDEN / "schedule.safetensors")[name]
    ours = getattr(ddpm_schedule(), name)
    assert ours.dtype == torch.float32 and ours.shape == (DDPM_TRAIN_STEPS,)
    assert torch.equal(ours, golden)


@pytest.mark.parametrize(
    "file", ["sampling_cfg5", "sampling_cfg5_shared_reference", "sampling_facevid2vid"]
)
def test_q_sample_to_t999_reproduces_the_original_start_latents_exactly(file):
    golden = load_file(GOLDEN / f"{file}.safetensors")
    assert torch.equal(q_sample(golden["z_pre"], golden["q_sample_noise"], 999), golden["x_T"])


def test_q_sample_rejects_a_timestep_outside_the_schedule():
    z = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="timestep must be in"):
        q_sample(z, z, DDPM_TRAIN_STEPS)
