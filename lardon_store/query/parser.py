"""The query string language: text parsed with :mod:`ast` (never ``eval``) into the objects of ``expressions``.

Only comparisons (chained too: ``20 <= pitch < 30``), ``in`` / ``not in`` a list or tuple, ``and``, ``or``, ``not``,
parentheses, metadata keys and literal values (numbers, quoted strings, True, False, None) are accepted; anything
else raises QueryError with a caret under the part at fault. ``not`` is ``~`` and ``k not in [...]`` is
``not (k in [...])``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import QueryError
from ..format.metadata import KEY_PATTERN, is_key
from .expressions import And, Compare, Expr, In, Not, Or, ensure_expr, kind

__all__ = ["MAX_QUERY_CHARS", "as_expr", "combine", "matches", "parse"]

MAX_QUERY_CHARS = 10_000
_REVERSED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

_AST_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_REFUSED = {
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attributes are not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.BinOp: "arithmetic is not allowed",
    ast.NamedExpr: "assignments are not allowed",
}


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines() or [""]

    def error(self, node: ast.AST | None, message: str, lineno: int = 1, col: int = 0) -> QueryError:
        if node is not None:
            lineno = getattr(node, "lineno", 1)
            line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
            # ast offsets count UTF-8 bytes; the caret counts characters.
            col = len(line.encode()[: getattr(node, "col_offset", 0)].decode(errors="ignore"))
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        where = f"line {lineno}, column {col + 1}" if len(self.lines) > 1 else f"column {col + 1}"
        return QueryError(f"query {self.text!r}: {message} ({where}):\n    {line}\n    {' ' * col}^")

    def parse(self) -> Expr:
        if len(self.text) > MAX_QUERY_CHARS:
            raise QueryError(f"query is {len(self.text)} characters long; the limit is {MAX_QUERY_CHARS}.")
        if not self.text.strip():
            raise QueryError("the query is empty: give a condition such as \"pitch > 60\" (or leave the query out to "
                             "select every entry).")  # fmt: skip
        try:
            self.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise QueryError(
                f"query {self.text[:80]!r}: character {exc.start + 1} ({self.text[exc.start]!r}) is not valid text "
                "(a lone surrogate): retype the query."
            ) from None
        try:
            tree = ast.parse(self.text.strip(), mode="eval")
        except SyntaxError as exc:
            line = (self.text.strip().splitlines() or [""])[(exc.lineno or 1) - 1]
            if exc.offset and line[exc.offset - 1 : exc.offset] == "=":  # (the parser stops at a lone "=")
                exc.msg = "invalid syntax: to compare, use == (a single = assigns)"
            lineno = exc.lineno or 1
            stripped = self.text.strip().splitlines() or [""]
            # offset 0 means "the text ended too early": point past its end
            col = exc.offset - 1 if exc.offset else len(stripped[min(lineno, len(stripped)) - 1])
            if lineno == 1:
                col += len(self.text) - len(self.text.lstrip())
            self.lines = self.text.splitlines() or [""]
            raise self.error(None, f"syntax error: {exc.msg}", lineno, col) from None
        except (RecursionError, MemoryError, ValueError) as exc:
            raise QueryError(f"query {self.text[:80]!r}...: cannot be parsed ({type(exc).__name__}).") from None
        self.lines = self.text.strip().splitlines() or [""]
        try:
            return self.condition(tree.body)
        except RecursionError:
            raise QueryError(f"query {self.text[:80]!r}...: nested too deeply.") from None

    def condition(self, node: ast.AST) -> Expr:
        if isinstance(node, ast.BoolOp):
            parts = tuple(self.condition(v) for v in node.values)
            return And(parts) if isinstance(node.op, ast.And) else Or(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.condition(node.operand))
        if isinstance(node, ast.Compare):
            terms = [node.left, *node.comparators]
            pairs = [self.compare(terms[i], op, terms[i + 1]) for i, op in enumerate(node.ops)]
            return pairs[0] if len(pairs) == 1 else And(tuple(pairs))
        if isinstance(node, ast.Name):
            raise self.error(node, f"{node.id!r} alone is not a condition: compare it, e.g. {node.id} == 1")
        raise self.refuse(node, "expected a comparison such as pitch > 60, combined with and, or, not")

    def refuse(self, node: ast.AST, default: str) -> QueryError:
        for cls, message in _REFUSED.items():
            if isinstance(node, cls):
                return self.error(node, message)
        return self.error(node, default)

    def compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> Expr:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(left, ast.Name):
                raise self.refuse(left, "the left of `in` must be a metadata key")
            key = self.key(left)
            if not isinstance(right, (ast.List, ast.Tuple)):
                raise self.refuse(right, "the right of `in` must be a list or tuple of values")
            expr: Expr = In(key, tuple(self.value(e) for e in right.elts))
            return Not(expr) if isinstance(op, ast.NotIn) else expr
        if type(op) not in _AST_OPS:
            raise self.error(left, f"operator {type(op).__name__} is not allowed: use == != < <= > >= in, not in")
        symbol = _AST_OPS[type(op)]
        if isinstance(left, ast.Name) and isinstance(right, ast.Name):
            raise self.error(
                right, f"comparing two keys is not supported: compare a key with a value (quote strings: '{right.id}')"
            )
        if isinstance(left, ast.Name):
            return self.make(left, Compare, self.key(left), symbol, self.value(right))
        if isinstance(right, ast.Name):
            return self.make(right, Compare, self.key(right), _REVERSED[symbol], self.value(left))
        raise self.refuse(left, "a comparison needs a metadata key on one side")

    def make(self, node: ast.AST, cls, *args) -> Expr:
        try:
            return cls(*args)
        except QueryError as exc:
            raise self.error(node, str(exc).rstrip(".")) from None

    def key(self, node: ast.Name) -> str:
        # Python reads identifiers through NFKC (a full-width "ｓize" becomes "size"): check the text as typed.
        typed = ast.get_source_segment("\n".join(self.lines), node) or node.id
        if not is_key(node.id) or typed != node.id:
            raise self.error(node, f"key {typed!r} is not valid: keys are ASCII identifiers ({KEY_PATTERN.pattern})")
        return node.id

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and kind(node.value) != "other":
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise self.error(node, f"{node.value!r} is not a finite number")
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self.value(node.operand)
            if kind(v) != "num":
                raise self.error(node, "a sign applies only to a number")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant):
            raise self.error(node, f"{type(node.value).__name__} values are not allowed: use int, float, str, bool, "
                             "None")  # fmt: skip
        if isinstance(node, ast.Name):
            raise self.error(node, f"expected a value, found the name {node.id!r} (quote strings: '{node.id}')")
        raise self.refuse(node, "expected a value: a number, a quoted string, True, False or None")


def parse(text: str) -> Expr:
    """The expression of a query string such as ``"instrument == 'violin' and pitch > 60"``.

    Only comparisons (chained too: ``20 <= pitch < 30``), ``in`` / ``not in`` a list or tuple, ``and``, ``or``,
    ``not``, parentheses, keys and literal values are accepted; anything else raises QueryError pointing at it.
    """
    if not isinstance(text, str):
        raise QueryError(f"a query string was expected, not {type(text).__name__}.")
    return _Parser(text).parse()


def as_expr(condition: Expr | str) -> Expr:
    """An Expr from an Expr or a query string."""
    return parse(condition) if isinstance(condition, str) else ensure_expr(condition)


def combine(conditions: Iterable[Expr | str], equals: Mapping[str, Any]) -> Expr:
    """The AND of ``conditions`` (Exprs or query strings) and of ``key == value`` for each keyword."""
    parts = [as_expr(c) for c in conditions]
    parts += [Compare(k, "==", v) for k, v in equals.items()]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def matches(expr: Expr | str, metadata: Mapping[str, Any]) -> bool:
    """Whether an entry with ``metadata`` matches ``expr``, computed in Python (the same semantics as the SQL)."""
    return as_expr(expr).match(metadata)
