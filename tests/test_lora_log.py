"""Issue 21, item 5: a LoRA merge is logged once per merge (it was logged twice: once by the node, once by the
pipeline). The pipeline's `loras_merged` is where the node and the command line merge LoRAs; tests/ui/ also counts
the line in a real ComfyUI's log after running the LCM template."""
from __future__ import annotations

import logging

import torch
from safetensors.torch import save_file

from xportrait_core.model.lora import LoraChoice
from xportrait_core.model.tiny_model import build_random_model
from xportrait_core.pipeline import loras_merged

TO_Q_KOHYA = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # a layer of the tiny UNet
MERGE_LINE = "layers merged at strength"


def test_each_lora_merge_is_logged_once_and_names_its_file(tmp_path, caplog):
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    for path in (first, second):
        save_file({f"{TO_Q_KOHYA}.lora_down.weight": torch.randn(2, 32),
                   f"{TO_Q_KOHYA}.lora_up.weight": torch.randn(32, 2)}, str(path))
    model = build_random_model(seed=0)
    with caplog.at_level(logging.DEBUG):
        with loras_merged(model, [LoraChoice(str(first), 1.0), LoraChoice(str(second), 0.5)]):
            pass
        with loras_merged(model, [LoraChoice(str(first), 1.0)]):
            pass
    merges = [record.getMessage() for record in caplog.records if MERGE_LINE in record.getMessage()]
    assert len(merges) == 3, merges
    assert sum("first" in line for line in merges) == 2 and sum("second" in line for line in merges) == 1
