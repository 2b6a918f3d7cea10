"""harness.calico.selector: the Calico label-selector subset labs use."""

from __future__ import annotations

import pytest

from harness.calico.selector import SelectorError, compile_selector, matches

R1 = {"rack": "r1", "kubernetes.io/hostname": "r1-n1", "zone": "a"}
R2 = {"rack": "r2", "kubernetes.io/hostname": "r2-n1", "gpu": "true"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("all()", R1, True),
        ("all()", BARE, True),
        ("", R1, True),
        ("   ", BARE, True),
        ("has(rack)", R1, True),
        ("has(gpu)", R1, False),
        ("has(kubernetes.io/hostname)", R2, True),
        ("rack == 'r1'", R1, True),
        ("rack == 'r1'", R2, False),
        ('rack == "r1"', R1, True),
        ("rack == 'r1'", BARE, False),
        ("kubernetes.io/hostname == 'r2-n1'", R2, True),
        ("rack != 'r1'", R1, False),
        ("rack != 'r1'", R2, True),
        ("rack != 'r1'", BARE, True),  # Calico: a missing label is "not equal"
        ("rack in {'r1', 'r3'}", R1, True),
        ("rack in {'r1', 'r3'}", R2, False),
        ("rack in {'r1'}", BARE, False),
        ("rack not in {'r1', 'r3'}", R1, False),
        ("rack not in {'r1', 'r3'}", R2, True),
        ("rack not in {'r1'}", BARE, True),
        ("!has(gpu)", R1, True),
        ("!has(gpu)", R2, False),
        ("!(rack == 'r1')", R1, False),
        ("!!has(rack)", R1, True),
        ("rack == 'r1' && zone == 'a'", R1, True),
        ("rack == 'r1' && zone == 'b'", R1, False),
        ("rack == 'r1' || has(gpu)", R2, True),
        ("rack == 'r3' || zone == 'b'", R1, False),
        ("(rack == 'r1' || rack == 'r2') && has(gpu)", R1, False),
        ("(rack == 'r1' || rack == 'r2') && has(gpu)", R2, True),
        ("rack=='r1'&&zone=='a'", R1, True),
        ("  rack   ==   'r1'  ", R1, True),
        ("rack == ''", {"rack": ""}, True),
        ("name == 'a b'", {"name": "a b"}, True),
    ],
)
def test_matches(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert matches(selector, labels) is expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"a": "1"}, True),  # a || (b && c): a alone is enough
        ({"b": "1"}, False),
        ({"b": "1", "c": "1"}, True),
        ({"a": "1", "c": "1"}, True),
        ({}, False),
    ],
)
def test_and_binds_tighter_than_or(labels: dict[str, str], expected: bool) -> None:
    assert matches("has(a) || has(b) && has(c)", labels) is expected
    assert matches("has(b) && has(c) || has(a)", labels) is expected


def test_parentheses_override_precedence() -> None:
    assert matches("(has(a) || has(b)) && has(c)", {"a": "1"}) is False
    assert matches("has(a) || has(b) && has(c)", {"a": "1"}) is True


def test_not_binds_tighter_than_and() -> None:
    assert matches("!has(a) && has(b)", {"b": "1"}) is True
    assert matches("!has(a) && has(b)", {"a": "1", "b": "1"}) is False


def test_compiled_selector_is_reusable() -> None:
    pred = compile_selector("rack == 'r1'")
    assert [pred(x) for x in (R1, R2, R1)] == [True, False, True]


@pytest.mark.parametrize(
    "selector",
    [
        "rack ==",
        "rack = 'x'",
        "has(",
        "has(rack",
        "rack",
        "rack == r1",  # value must be quoted
        "rack == 'r1' &&",
        "rack == 'r1' ||",
        "&& rack == 'r1'",
        "(rack == 'r1'",
        "rack == 'r1')",
        "rack in 'r1'",
        "rack in {'r1'",
        "rack not {'r1'}",
        "rack == 'r1' zone == 'a'",
        "!",
        "all(",
        "rack == 'unterminated",
        "rack ~ 'x'",
        "rack == 'r1' & zone == 'a'",
    ],
)
def test_garbage_raises_selector_error(selector: str) -> None:
    with pytest.raises(SelectorError):
        compile_selector(selector)


def test_selector_error_is_a_value_error_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="offset") as ei:
        compile_selector("rack = 'x'")
    assert isinstance(ei.value, SelectorError)
    assert "rack = 'x'" in str(ei.value)
    with pytest.raises(SelectorError, match="ends early"):
        compile_selector("rack ==")


def test_error_offset_points_at_the_bad_character() -> None:
    with pytest.raises(SelectorError, match="offset 5"):
        compile_selector("rack = 'x'")
