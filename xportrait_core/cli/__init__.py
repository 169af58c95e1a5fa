"""The command line, `python -m xportrait_core COMMAND`: animate, demo (with its synthetic head-motion clip),
convert, and queue (batch-runs a workflow on ComfyUI servers: the HTTP client and the resumable state file).

May import: every other part of xportrait_core. Nothing imports cli.
"""
