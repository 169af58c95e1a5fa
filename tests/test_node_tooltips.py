"""Every input and every output of every node explains itself on hover, in an artist's words (like core KSampler's):
what it does or what to connect or pick, without array shapes or type jargon."""
from __future__ import annotations

import re

import pytest

from nodes import NODE_CLASS_MAPPINGS

# Words that mean nothing to someone wiring nodes: array shapes like "(F, R, R, 3)", tensor and dtype talk.
JARGON = re.compile(r"\(\s*[A-Z]\s*,|\btensor|\bdtype\b|\bunscaled\b|\blatent space\b|\bbatch dimension\b", re.I)
MIN_WORDS = 4


def _inputs(cls) -> list[tuple[str, dict]]:
    types = cls.INPUT_TYPES()
    return [(name, spec[1] if len(spec) > 1 else {}) for kind in ("required", "optional")
            for name, spec in types.get(kind, {}).items()]


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_every_input_has_a_tooltip(node_id):
    missing = [name for name, options in _inputs(NODE_CLASS_MAPPINGS[node_id]) if not options.get("tooltip")]
    assert missing == [], f"{node_id}: inputs without a tooltip: {missing}"


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_every_output_has_a_tooltip(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", ())
    assert len(tooltips) == len(cls.RETURN_TYPES) and all(tooltips), f"{node_id}: {len(tooltips)} output tooltips " \
        f"for {len(cls.RETURN_TYPES)} outputs"


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_tooltips_are_sentences_without_jargon(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    texts = [options["tooltip"] for _, options in _inputs(cls) if options.get("tooltip")]
    texts += list(getattr(cls, "OUTPUT_TOOLTIPS", ()))
    for text in texts:
        assert len(text.split()) >= MIN_WORDS, f"{node_id}: too short to help: {text!r}"
        assert not JARGON.search(text), f"{node_id}: jargon in {text!r}"


def test_the_jargon_check_catches_a_shape():
    assert JARGON.search("Aligned driving frames (F, R, R, 3): the pose control.")


def test_a_real_comfyui_serves_every_tooltip():
    """/object_info as ComfyUI 0.3.64 served it (recorded by tests/test_comfyui_integration.py) carries them all."""
    import json
    from pathlib import Path

    served = json.loads((Path(__file__).parent / "data" / "object_info_xportrait.json").read_text())
    assert set(served) == set(NODE_CLASS_MAPPINGS)
    for node_id, info in served.items():
        specs = [spec for kind in ("required", "optional") for spec in info["input"].get(kind, {}).values()]
        assert all(len(spec) > 1 and spec[1].get("tooltip") for spec in specs), node_id
        assert len(info["output_tooltips"]) == len(info["output"]) and all(info["output_tooltips"]), node_id
