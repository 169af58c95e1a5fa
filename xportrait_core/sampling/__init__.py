"""From a model and its conditioning to video latents, on one path in sigma space.

Holds the sampling entry and its options (`sampler`: SamplerOptions, checked when made; every step's latents
checked for NaN/inf: `finite_check`), the schedules in sigma space (`sigmas`: the original's DDIM, SD1.5's leading
spacing for euler and dpmpp_2m, LCM's), the sampler functions that step them (`samplers`), the windowed
classifier-free-guided denoiser that every sampler drives, ours and ComfyUI's (`guidance`: the appearance bank
written once per step), and window planning and averaging (`windows`).

May import: model, networks, options. Never cli, nodes, media or controls: sampling sees tensors, not files.
"""
