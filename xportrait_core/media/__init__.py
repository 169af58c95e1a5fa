"""Images and videos in and out: reading and writing video files and frame folders, side-by-side panels, and
fitting images to the square grid the model works on.

May import: nothing of xportrait_core.
"""
