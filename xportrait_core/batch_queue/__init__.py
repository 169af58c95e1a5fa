"""The batch queue: runs an API-format ComfyUI workflow for every source x driving pair on one or more ComfyUI
servers (`runner`), through a small HTTP client for ComfyUI's API (`comfy_client`), with a resumable state file
(`queue_state`); `command` runs the command line's `queue`. It talks to ComfyUI over HTTP only, so it is no part of
the host-independent core: cli/main.py builds the `queue` parser from the option table (`xportrait_core.options`)
and imports this package only when `queue` runs.

May import: the standard library, xportrait_core.options (the queue's defaults), and xportrait_core.media.safe_output
(state file and downloads are written atomically). Never torch, never cli.
"""
