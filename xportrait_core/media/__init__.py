"""Images and videos in and out: reading and writing video files and frame folders, side-by-side panels,
fitting images to the square grid the model works on, and writing every output safely (checked before any work,
written to a temporary file and renamed: `safe_output`).

May import: options (the vocabulary every part shares). Nothing else of xportrait_core.
"""
