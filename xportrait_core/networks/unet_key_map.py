"""Module names of the SD1.5 UNet: diffusers' `UNet2DConditionModel` layout -> the original LDM layout.

LoRA files name the UNet's layers the diffusers way (`down_blocks.1.attentions.0...`, kohya writes the same path
with underscores); our UNet keeps the LDM names (`input_blocks.4.1...`). The map is derived from the block
structure rather than listed:

- LDM `input_blocks` are [conv_in] + per level (num_res_blocks x [ResBlock (+ SpatialTransformer)]) + a
  Downsample after every level but the last; diffusers' `down_blocks.i` hold the same ResBlocks (`resnets.j`),
  transformers (`attentions.j`) and `downsamplers.0`.
- `middle_block` is ResBlock, SpatialTransformer, ResBlock = `mid_block.resnets.0, attentions.0, resnets.1`.
- LDM `output_blocks` are per level, deepest first, (num_res_blocks + 1) x [ResBlock (+ SpatialTransformer)], the
  last of each level followed by an Upsample (index 1, or 2 after a transformer); diffusers' `up_blocks.i`.
- Inside a ResBlock diffusers renames the layers (norm1 = in_layers.0, conv1 = in_layers.2, time_emb_proj =
  emb_layers.1, norm2 = out_layers.0, conv2 = out_layers.3, conv_shortcut = skip_connection); transformers keep
  their inner names in both layouts; Downsample's conv is `op`, Upsample's is `conv`.
"""
from __future__ import annotations

SD15_LEVELS = 4  # channel_mult (1, 2, 4, 4)
SD15_RES_BLOCKS = 2  # num_res_blocks
SD15_ATTENTION_LEVELS = (0, 1, 2)  # attention_resolutions 4, 2, 1 = the three highest resolutions
SD15_TRANSFORMER_DEPTH = 1

RESNET_LAYERS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
TRANSFORMER_BLOCK_LAYERS = (
    "norm1", "norm2", "norm3",
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ff.net.0.proj", "ff.net.2",
)
TOP_LEVEL_LAYERS = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(diffusers_prefix: str, ldm_prefix: str) -> dict[str, str]:
    return {f"{diffusers_prefix}.{ours}": f"{ldm_prefix}.{ldm}" for ours, ldm in RESNET_LAYERS.items()}


def _transformer(diffusers_prefix: str, ldm_prefix: str, depth: int) -> dict[str, str]:
    names = ["norm", "proj_in", "proj_out"] + [
        f"transformer_blocks.{b}.{layer}" for b in range(depth) for layer in TRANSFORMER_BLOCK_LAYERS
    ]
    return {f"{diffusers_prefix}.{n}": f"{ldm_prefix}.{n}" for n in names}


def diffusers_to_ldm_unet_names(
    levels: int = SD15_LEVELS,
    num_res_blocks: int = SD15_RES_BLOCKS,
    attention_levels: tuple[int, ...] = SD15_ATTENTION_LEVELS,
    transformer_depth: int = SD15_TRANSFORMER_DEPTH,
) -> dict[str, str]:
    """Every weight-bearing module of the UNet: diffusers module name -> LDM module name (no `.weight`).

    A ResBlock's `conv_shortcut` is listed for every ResBlock; it exists only where the channel count changes.
    """
    names = dict(TOP_LEVEL_LAYERS)
    per_level = num_res_blocks + 1  # LDM blocks per level: the ResBlocks plus a Down-/Upsample slot
    for level in range(levels):
        for j in range(num_res_blocks):
            index = 1 + level * per_level + j
            names.update(_resnet(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{index}.0"))
            if level in attention_levels:
                names.update(_transformer(f"down_blocks.{level}.attentions.{j}", f"input_blocks.{index}.1",
                                          transformer_depth))
        if level < levels - 1:
            downsample = 1 + level * per_level + num_res_blocks
            names[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{downsample}.0.op"

    names.update(_resnet("mid_block.resnets.0", "middle_block.0"))
    names.update(_transformer("mid_block.attentions.0", "middle_block.1", transformer_depth))
    names.update(_resnet("mid_block.resnets.1", "middle_block.2"))

    for up in range(levels):
        level = levels - 1 - up  # up_blocks run from the deepest level back up
        has_attention = level in attention_levels
        for j in range(per_level):
            index = up * per_level + j
            names.update(_resnet(f"up_blocks.{up}.resnets.{j}", f"output_blocks.{index}.0"))
            if has_attention:
                names.update(_transformer(f"up_blocks.{up}.attentions.{j}", f"output_blocks.{index}.1",
                                          transformer_depth))
        if up < levels - 1:
            slot = 2 if has_attention else 1
            names[f"up_blocks.{up}.upsamplers.0.conv"] = f"output_blocks.{up * per_level + num_res_blocks}.{slot}.conv"
    return names
