"""The iBUG 300-W 68-point face landmark layout, and the index ranges X-Portrait reads from it.

Point order (0-based, as dlib, face-alignment/FAN and the original use it; "right" is the subject's right, i.e.
the left side of the image):

    jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, nostrils 31-35,
    right eye 36-41, left eye 42-47, outer lip 48-59, inner lip 60-67

The original computes the local-patch centres from `lmks[43:48]`, `lmks[37:42]` and `lmks[49:68]`: each eye
without its first point and the mouth without its first outer-lip corner. Those slices move the centres by a few
pixels against the full ranges, so we keep them exactly.
"""

NUM_POINTS = 68

JAW = range(0, 17)
RIGHT_BROW = range(17, 22)
LEFT_BROW = range(22, 27)
NOSE = range(27, 36)
RIGHT_EYE = range(36, 42)
LEFT_EYE = range(42, 48)
MOUTH = range(48, 68)

# The original's slices for the three local-patch centres, in the order its local hint is built
# (first the subject's left eye, then the right eye, then the mouth).
ORIGINAL_LEFT_EYE_SLICE = slice(43, 48)
ORIGINAL_RIGHT_EYE_SLICE = slice(37, 42)
ORIGINAL_MOUTH_SLICE = slice(49, 68)
ORIGINAL_PATCH_SLICES = (ORIGINAL_LEFT_EYE_SLICE, ORIGINAL_RIGHT_EYE_SLICE, ORIGINAL_MOUTH_SLICE)
