"""From a model and its conditioning to video latents.

Holds the sampling loop and its options (checked one by one before any work: `option_checks`; every step's latents
checked for NaN/inf: `finite_check`), the windowed classifier-free-guided denoiser (the appearance bank written
once per step), window planning and averaging, and the schedulers (the original's DDIM; diffusers' Euler,
DPM++ 2M, LCM).

May import: model, networks. Never cli, nodes, media or controls: sampling sees tensors, not files.
"""
