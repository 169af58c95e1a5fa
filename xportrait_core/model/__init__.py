"""The X-Portrait model as a whole, and its files.

Holds XPortraitModel (the five networks under their checkpoint prefixes, and the three evaluations sampling needs:
appearance bank, conditional eps, unconditional eps), the DDPM noise schedule the networks were trained with,
checkpoint reading, checking, loading and converting, LoRA merging into the main UNet, and small random models in
the real key layout for tests, the demo and benchmarks.

May import: networks, options; and media.safe_output only (checkpoints are checked and written like every other output).
"""
