"""The networks of X-Portrait as plain torch modules in the original checkpoint's key layout (LDM names).

Holds the motion UNet (SD1.5 UNet + AnimateDiff motion modules + reference-bank reading + ControlNet residual
inputs), the appearance (reference) net, the ControlNets, the VAE, the CLIP text encoder, their shared building
blocks, the one attention function, the reference bank, the diffusers -> LDM name map of the UNet, and the configs
derived from a state dict's shapes.

May import: torch, modules of this package, and options (the shared vocabulary and numbers). Nothing else of
xportrait_core.
"""
