"""Driving-video preparation: from a driving video and the source portrait to the two control hints.

Holds face landmark providers (landmarks/: dlib, MediaPipe, replayed points), best-frame choice and alignment of the
driving frames to the source face, the local eye and mouth patches, and the two calls that make the hints the sampler
takes (`driving_controls`: align_driving for the pose hints, local_patches for the local hints).

May import: options, media.image_fit (fitting frames to squares). Never media's readers or writers (video_io), model,
sampling, pipeline or cli.
"""
