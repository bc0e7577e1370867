"""Component options: coercion of CLI strings and YAML values to option types, descriptions, errors."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest

from iterframe.plugins.options import (
    ComponentOptionError,
    build_options,
    check_options_class,
    coerce_option,
    option_infos,
    type_name,
)


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (int, "8", 8),
        (int, " 8 ", 8),
        (int, 8, 8),
        (float, "0.5", 0.5),
        (float, 2, 2.0),
        (bool, "true", True),
        (bool, "False", False),
        (bool, "yes", True),
        (bool, "off", False),
        (bool, "1", True),
        (bool, False, False),
        (str, "text", "text"),
        (list[str], "a,b", ["a,b"]),
        (list[str], '["a,b", "c"]', ["a,b", "c"]),
        (list[str], "", []),
        (list[str], ("x",), ["x"]),
        (list[int], "1, 2", [1, 2]),
        (Optional[int], "none", None),
        (Optional[int], "NULL", None),
        (Optional[int], None, None),
        (Optional[int], "3", 3),
        (Optional[list[str]], "a", ["a"]),
        (Any, {"free": "form"}, {"free": "form"}),
    ],
)
def test_values_are_coerced_to_the_option_type(annotation, value, expected):
    coerced = coerce_option(value, annotation, "test", "option")
    assert coerced == expected
    assert type(coerced) is type(expected)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int, "8.5"),
        (int, 8.0),
        (int, True),
        (float, "fast"),
        (float, True),
        (bool, "maybe"),
        (bool, 1),
        (str, 5),
        (list[int], "1,x"),
        (list[str], 5),
        (list[str], "[1, 2]"),
        (Optional[int], "three"),
    ],
)
def test_wrong_values_name_the_option_and_the_expected_type(annotation, value):
    with pytest.raises(ComponentOptionError) as error:
        coerce_option(value, annotation, "reward 'demo'", "weight")
    assert str(error.value) == f"reward 'demo': option 'weight' expects {type_name(annotation)}, got {value!r}."


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (int, "int"),
        (list[str], "list[str]"),
        (Optional[float], "Optional[float]"),
        (Optional[list[int]], "Optional[list[int]]"),
    ],
)
def test_type_names_are_readable(annotation, name):
    assert type_name(annotation) == name


@dataclasses.dataclass
class ExampleOptions:
    path: str = dataclasses.field(metadata={"help": "Where the model is."})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Texts per forward pass."})
    labels: list[str] = dataclasses.field(default_factory=lambda: ["good"])


def test_option_infos_describe_name_type_default_and_help():
    infos = option_infos(ExampleOptions)
    assert [tuple(info) for info in infos] == [
        ("path", "str", dataclasses.MISSING, "Where the model is."),
        ("batch_size", "int", 8, "Texts per forward pass."),
        ("labels", "list[str]", ["good"], ""),
    ]
    assert [info.required for info in infos] == [True, False, False]


def test_build_options_applies_values_over_defaults():
    options = build_options(ExampleOptions, {"path": "/models/rm", "batch-size": "2"}, "reward 'rm'")
    assert options == ExampleOptions(path="/models/rm", batch_size=2, labels=["good"])


def test_build_options_rejects_an_unknown_key_with_the_closest_valid_one():
    with pytest.raises(ComponentOptionError) as error:
        build_options(ExampleOptions, {"path": "x", "batchsize": 2}, "reward 'rm'")
    assert str(error.value) == (
        "reward 'rm' has no option 'batchsize'. Did you mean 'batch_size'? "
        "Valid options: batch_size, labels, path."
    )


def test_build_options_names_missing_required_options():
    with pytest.raises(ComponentOptionError, match=r"reward 'rm': required option\(s\) 'path' not set"):
        build_options(ExampleOptions, {}, "reward 'rm'")


def test_check_options_class_rejects_a_non_dataclass():
    with pytest.raises(TypeError, match="Options must be a dataclass"):
        check_options_class(dict, "plugin 'x'")


def test_check_options_class_accepts_every_supported_type():
    @dataclasses.dataclass
    class AllTypes:
        a: int = 0
        b: float = 0.0
        c: bool = False
        d: str = ""
        e: list[str] = dataclasses.field(default_factory=list)
        f: Optional[list[float]] = None
        g: Any = None

    check_options_class(AllTypes, "plugin 'x'")


@pytest.mark.parametrize("text", ["\n\n", "\nQuestion:", " Q:", "a, b", "[INST]", " [x] ", "</s>"])
def test_a_plain_string_for_a_string_list_is_one_item_kept_byte_for_byte(text):
    assert coerce_option(text, list[str], "generator 'hf'", "stop") == [text]
    assert coerce_option(text, Optional[list[str]], "generator 'hf'", "stop") == [text]


def test_a_json_list_string_is_that_list_and_numbers_may_be_comma_separated():
    assert coerce_option('["\\n\\n", "Q: a, b"]', list[str], "generator 'hf'", "stop") == ["\n\n", "Q: a, b"]
    assert coerce_option("[]", list[str], "generator 'hf'", "stop") == []
    assert coerce_option("1, 2", list[int], "filter 'x'", "sizes") == [1, 2]
