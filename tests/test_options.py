"""One option vocabulary: every command-line flag and every node input comes from `xportrait_core.options`, with
its default, choices or range and its help (the flag's help is the node's tooltip), and an option's error is
spelled in each front end's words."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from nodes import NODE_CLASS_MAPPINGS
from nodes.errors import about_input
from nodes.sampler_node import Sampler
from xportrait_core.cli import flags
from xportrait_core.cli.main import build_parser
from xportrait_core.options import OPTIONS, OptionError, check
from xportrait_core.sampling.sampler import SamplerOptions

BUILT_IN = {"help", "version"}  # argparse's own --help and --version
# Where one command's default differs from the option's on purpose: the demo's tiny model works at 128 px, 4 steps.
COMMAND_DEFAULTS = {("demo", "steps"): 4, ("demo", "resolution"): 128}


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return {"": parser, **subparsers.choices}


def flag_actions() -> list[tuple[str, argparse.Action]]:
    return [(command, action) for command, parser in commands().items() for action in parser._actions
            if action.dest not in BUILT_IN and not isinstance(action, argparse._SubParsersAction)]


def node_inputs() -> list[tuple[str, str, tuple]]:
    return [(node_id, name, spec) for node_id, cls in sorted(NODE_CLASS_MAPPINGS.items())
            for kind in ("required", "optional") for name, spec in cls.INPUT_TYPES().get(kind, {}).items()]


# ------------------------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("command, action", flag_actions(), ids=lambda value: getattr(value, "dest", value))
def test_every_flag_is_an_option_with_its_spelling_help_and_default(command, action):
    option = OPTIONS[action.dest]
    spelled = action.option_strings or [action.metavar]
    assert spelled == [option.flag, *option.aliases]
    assert action.help.startswith(option.help)
    expected = COMMAND_DEFAULTS.get((command, action.dest), option.default)
    if action.option_strings and action.nargs != argparse.REMAINDER and not isinstance(action, argparse._AppendAction):
        assert action.default == expected, (command, action.dest)
    if option.kind == "choice" and action.choices is not None:
        assert tuple(action.choices) == option.choices


def test_every_command_has_flags_and_the_demo_overrides_only_what_it_declares():
    seen = {(command, action.dest) for command, action in flag_actions()}
    assert {command for command, _ in seen} == {"animate", "demo", "convert", "queue"}  # the top level: none
    overridden = {(command, action.dest) for command, action in flag_actions()
                  if action.option_strings and action.default != OPTIONS[action.dest].default
                  and not isinstance(action, argparse._AppendAction)}
    assert overridden == set(COMMAND_DEFAULTS)


def test_the_older_dtype_flag_still_sets_the_precision():
    args = build_parser().parse_args(["animate", "m.th", "s.png", "d.mp4", "o.mp4", "--dtype", "bf16"])
    assert args.precision == "bf16"


# -------------------------------------------------------------------------------------------------- the nodes
@pytest.mark.parametrize("node_id, name, spec", node_inputs(),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_node_input_is_an_option_with_its_tooltip_default_and_range(node_id, name, spec):
    cls = NODE_CLASS_MAPPINGS[node_id]
    taken = [option for option in cls.REQUIRED_OPTIONS + cls.OPTIONAL_OPTIONS if OPTIONS[option].node_input == name]
    assert len(taken) == 1, f"{node_id} input {name!r} sets no option, or several"
    option = OPTIONS[taken[0]]
    kind, details = spec[0], spec[1]
    assert details["tooltip"] == option.help
    if option.kind in ("int", "float", "choice"):
        assert details["default"] == option.default
    if option.kind == "choice":
        assert tuple(kind) == option.choices
    if option.kind in ("int", "float"):
        assert details["max"] == option.maximum
        assert details["min"] == dict(option.widget).get("min", option.minimum)


def test_the_node_inputs_follow_the_option_order_the_node_declares():
    for cls in NODE_CLASS_MAPPINGS.values():
        declared = cls.INPUT_TYPES()
        assert list(declared["required"]) == [OPTIONS[name].node_input for name in cls.REQUIRED_OPTIONS]
        assert list(declared.get("optional", {})) == [OPTIONS[name].node_input for name in cls.OPTIONAL_OPTIONS]


# ------------------------------------------------------------------------------------------ one place to change
def test_changing_a_default_in_the_table_changes_the_flag_and_the_node_input(monkeypatch):
    monkeypatch.setitem(OPTIONS, "cfg", dataclasses.replace(OPTIONS["cfg"], default=7.5))
    monkeypatch.setitem(OPTIONS, "scheduler", dataclasses.replace(OPTIONS["scheduler"], default="euler"))
    args = build_parser().parse_args(["animate", "m.th", "s.png", "d.mp4", "o.mp4"])
    assert (args.cfg, args.scheduler) == (7.5, "euler")
    required = Sampler.INPUT_TYPES()["required"]
    assert required["cfg"][1]["default"] == 7.5 and required["scheduler"][1]["default"] == "euler"


def test_changing_a_help_text_in_the_table_changes_the_help_and_the_tooltip(monkeypatch):
    monkeypatch.setitem(OPTIONS, "steps", dataclasses.replace(OPTIONS["steps"], help="How many steps to take."))
    animate = commands()["animate"]
    assert next(action.help for action in animate._actions if action.dest == "steps").startswith("How many steps")
    assert Sampler.INPUT_TYPES()["required"]["steps"][1]["tooltip"] == "How many steps to take."


# ------------------------------------------------------------------------------------ one check, three spellings
@pytest.mark.parametrize("name, value", [("steps", 0), ("cfg", float("nan")), ("window", 32), ("overlap", -1),
                                         ("strength", 0.0), ("scheduler", "heun"), ("resolution", 100),
                                         ("precision", "fp64"), ("text_num_heads", 65)])
def test_a_bad_value_is_refused_by_its_option_alone(name, value):
    with pytest.raises(OptionError) as raised:
        check(name, value)
    assert raised.value.option == name and str(raised.value).startswith(f"{name}: must be")


def test_an_option_error_is_spelled_by_each_front_end():
    error = OptionError("overlap", "does not fit the video; lower it or use {placement=fixed}")
    assert str(error) == "overlap: does not fit the video; lower it or use placement='fixed'"
    assert error.render(flags.spell) == "--overlap: does not fit the video; lower it or use --placement fixed"
    with pytest.raises(ValueError) as raised, about_input(Sampler, "motion"):
        raise error
    assert str(raised.value) == ("X-Portrait Sampler, input 'overlap': does not fit the video; lower it or use "
                                 "window_placement fixed")


def test_an_option_of_another_node_is_named_with_the_nodes_that_have_it():
    with pytest.raises(ValueError) as raised, about_input(Sampler, "model"):
        raise OptionError(None, "Try {precision=fp32}.")
    assert str(raised.value) == "X-Portrait Sampler, input 'model': Try precision fp32 on Load X-Portrait Model."


def test_sampler_options_are_checked_once_when_made():
    calls = []

    class Counting(dict):
        def __getitem__(self, name):
            calls.append(name)
            return super().__getitem__(name)

    import xportrait_core.options as options_module

    counting = Counting(OPTIONS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(options_module, "OPTIONS", counting)
        SamplerOptions(cfg=2.0, steps=8)
    assert calls.count("cfg") == 1 and calls.count("steps") == 1
