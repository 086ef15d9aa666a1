"""Metadata queries: expressions, the safe string language, the query snapshot and evaluation.

The expression API is re-exported here: ``from lardon_store.query import meta, parse, And, Compare...``.
"""

from .evaluate import explain
from .expressions import And, Between, Compare, Exists, Expr, Field, In, Not, Or, meta
from .parser import matches, parse

__all__ = [
    "And",
    "Between",
    "Compare",
    "Exists",
    "Expr",
    "Field",
    "In",
    "Not",
    "Or",
    "explain",
    "matches",
    "meta",
    "parse",
]
