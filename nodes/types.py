"""Names of the link types and the menu category the pack's nodes share."""

CATEGORY = "X-Portrait"

MODEL = "XPORTRAIT_MODEL"  # nodes.host.ManagedModel
REFERENCE = "XPORTRAIT_REFERENCE"  # xportrait_core.pipeline.References
LORA = "XPORTRAIT_LORA"  # tuple of xportrait_core.model.lora.LoraChoice, applied in order
LANDMARKS = "XPORTRAIT_LANDMARKS"  # an xportrait_core.controls.landmarks.LandmarkProvider
CROP_RECORD = "XPORTRAIT_CROP"  # xportrait_core.pipeline.CropRecord: where a face crop sits in its picture
