"""X-Portrait core library: networks, checkpoint loading, sampling, driving-video preparation.

Host-independent: never imports ComfyUI. Submodules are imported explicitly by their users.
"""
__version__ = "0.1.0"
