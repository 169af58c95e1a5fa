"""The command line, `python -m xportrait_core COMMAND`: animate, demo (with its synthetic head-motion clip),
convert, and queue (batch-runs a workflow on ComfyUI servers; here only its arguments: the batch queue itself is
xportrait_core.batch_queue, imported when the command runs).

May import: every other part of xportrait_core. Nothing imports cli.
"""
