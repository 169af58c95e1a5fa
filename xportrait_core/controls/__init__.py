"""Driving-video preparation: from a driving video and the source portrait to the two control hints.

Holds face landmark providers (landmarks/: dlib, MediaPipe, replayed points), best-frame choice and alignment of the
driving frames to the source face, the local eye and mouth patches, and prepare_driving_controls, which makes the
pose hints and local hints the sampler takes.

May import: media.image_fit (fitting frames to squares). Never media's readers or writers (video_io), model,
sampling, pipeline or cli.
"""
