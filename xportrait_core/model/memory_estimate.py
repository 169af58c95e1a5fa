"""How much activation memory a window forward needs, from the UNet's widths (no probing of the device).

Used to size batches (how many windows, and whether the conditional and unconditional passes share a forward)
and to tell a host how much room to leave besides the weights. The count follows what is alive at the UNet's peak,
the first (widest) output level:

- the skips: every input block's output, kept until its output block (the ControlNet residuals are added into
  them in place, so they cost nothing extra);
- the largest transient of a spatial transformer at the widest level: the GEGLU feed-forward's projection
  (2 x 4C per token) and its product (4C), plus the block's input, the normed copy and the attention output (3C),
  with the reference tokens' keys and values for the conditional rows (2C per reference token);
- the output block's concatenated input (2C).

`bench/bench_gpu.py` prints this estimate beside the measured peak so the margin can be checked on a device.
"""
from __future__ import annotations

import torch

from ..networks.config import UNetConfig

FEED_FORWARD_PEAK_WIDTHS = 12   # GEGLU: projection to 2 x 4C, then the 4C product, per token
TRANSFORMER_LIVE_WIDTHS = 3     # block input, normed copy, attention output, per token
CONCAT_WIDTHS = 2               # output block input: h and the skip, concatenated
REFERENCE_KV_WIDTHS = 2         # keys and values of the reference tokens, per token, for rows reading the bank
SAFETY_FACTOR = 1.5             # allocator rounding, kernels' workspaces, the ControlNet's own transient


def unet_row_bytes(config: UNetConfig, latent_h: int, latent_w: int, dtype: torch.dtype,
                   reads_bank: bool, references: int = 1) -> int:
    """Estimated activation bytes one row (one frame) of a UNet forward keeps at its peak."""
    widths = [config.model_channels * mult for mult in config.channel_mult]
    cells = [(latent_h >> level) * (latent_w >> level) for level in range(len(widths))]
    skips = widths[0] * cells[0]  # input block 0 (conv_in)
    for level, (width, area) in enumerate(zip(widths, cells)):
        skips += config.num_res_blocks * width * area
        if level < len(widths) - 1:
            skips += width * (cells[level + 1])  # the Downsample's output
    transient = (FEED_FORWARD_PEAK_WIDTHS + TRANSFORMER_LIVE_WIDTHS + CONCAT_WIDTHS) * widths[0] * cells[0]
    if reads_bank:
        transient += REFERENCE_KV_WIDTHS * widths[0] * cells[0] * references
    return int(SAFETY_FACTOR * (skips + transient) * dtype.itemsize)


def window_activation_bytes(config: UNetConfig, latent_h: int, latent_w: int, dtype: torch.dtype,
                            conditional_rows: int, unconditional_rows: int, references: int = 1) -> int:
    """Estimated activation bytes of one forward over that many conditional rows (bank, ControlNets) and
    unconditional rows."""
    return (conditional_rows * unet_row_bytes(config, latent_h, latent_w, dtype, True, references)
            + unconditional_rows * unet_row_bytes(config, latent_h, latent_w, dtype, False))
