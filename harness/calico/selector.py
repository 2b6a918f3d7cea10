"""Calico label selectors (`rack == 'r1' && has(color)`), parsed and evaluated.

Supports the subset labs use: all(), has(k), k == 'v', k != 'v', k in {'a','b'},
k not in {...}, !, &&, ||, parentheses. Anything else is a SelectorError naming the offset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Labels = Mapping[str, str]
Predicate = Callable[[Labels], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|&&|\|\||[!(){},])|(?P<str>'[^']*'|\"[^\"]*\")|(?P<word>[A-Za-z0-9_./-]+))"
)


class SelectorError(ValueError):
    """The selector text is not one this evaluator understands."""


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise SelectorError(f"unexpected character {text[bad]!r} at offset {bad} in selector {text!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        out.append((kind, value, m.start(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, expect: str | None = None) -> tuple[str, str, int]:
        if self.i >= len(self.toks):
            raise SelectorError(
                f"selector {self.text!r} ends early" + (f", expected {expect!r}" if expect else "")
            )
        tok = self.toks[self.i]
        if expect is not None and tok[1] != expect:
            raise SelectorError(f"expected {expect!r} at offset {tok[2]} in selector {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        if not self.toks:
            return lambda _labels: True
        pred = self.or_expr()
        if self.i != len(self.toks):
            raise SelectorError(f"unexpected {self.toks[self.i][1]!r} at offset {self.toks[self.i][2]}")
        return pred

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while self.peek() == "||":
            self.take()
            right = self.and_expr()
            left = (lambda a, b: lambda labels: a(labels) or b(labels))(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while self.peek() == "&&":
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda labels: a(labels) and b(labels))(left, right)
        return left

    def unary(self) -> Predicate:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda labels: not inner(labels)
        if self.peek() == "(":
            self.take()
            inner = self.or_expr()
            self.take(")")
            return inner
        return self.term()

    def _string(self) -> str:
        kind, value, pos = self.take()
        if kind != "str":
            raise SelectorError(f"expected a quoted string at offset {pos} in selector {self.text!r}")
        return value[1:-1]

    def _set(self) -> frozenset[str]:
        self.take("{")
        values: set[str] = set()
        while self.peek() != "}":
            values.add(self._string())
            if self.peek() == ",":
                self.take()
        self.take("}")
        return frozenset(values)

    def term(self) -> Predicate:
        kind, word, pos = self.take()
        if kind != "word":
            raise SelectorError(f"unexpected {word!r} at offset {pos} in selector {self.text!r}")
        if word in ("all", "has") and self.peek() == "(":
            self.take("(")
            if word == "all":
                self.take(")")
                return lambda _labels: True
            _, key, _ = self.take()
            self.take(")")
            return lambda labels: key in labels
        op = self.peek()
        if op == "==":
            self.take()
            v = self._string()
            return lambda labels: labels.get(word) == v
        if op == "!=":
            self.take()
            v = self._string()
            return lambda labels: labels.get(word) != v
        if op == "in":
            self.take()
            s = self._set()
            return lambda labels: labels.get(word) in s
        if op == "not":
            self.take()
            self.take("in")
            s = self._set()
            return lambda labels: labels.get(word) not in s
        raise SelectorError(f"expected an operator after {word!r} in selector {self.text!r}")


def compile_selector(text: str) -> Predicate:
    """Compile a Calico selector into a predicate over a label mapping."""
    return _Parser(text).parse()


def matches(text: str, labels: Labels) -> bool:
    return compile_selector(text)(labels)
