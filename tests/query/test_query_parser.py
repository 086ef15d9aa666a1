"""The query string language: what it accepts, and that everything else is refused with a pointer to the text."""

from __future__ import annotations

import re
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lardon_store as ls
from lardon_store import QueryError, meta
from lardon_store.query import And, Not, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pitch > 60", meta.pitch > 60),
        ("60 < pitch", meta.pitch > 60),
        ("pitch == -3", meta.pitch == -3),
        ("pitch >= -2.5e3", meta.pitch >= -2500.0),
        ("pitch == +4", meta.pitch == 4),
        ("name == 'violin'", meta.name == "violin"),
        ('name == "a\'b"', meta.name == "a'b"),
        ("ok == True", meta.ok == True),  # noqa: E712
        ("x == None", meta.x == None),  # noqa: E711
        ("x != None", meta.x != None),  # noqa: E711
        ("split in ['train', 'valid']", meta.split.isin(["train", "valid"])),
        ("split in ('train',)", meta.split.isin(["train"])),
        ("split not in [1, -2, None]", ~meta.split.isin([1, -2, None])),
        ("20 <= pitch < 30", And(((meta.pitch >= 20), (meta.pitch < 30)))),
        ("not (a == 1 or b == 2) and c < 'z'", ~((meta.a == 1) | (meta.b == 2)) & (meta.c < "z")),
        ("  (a == 1)\n", meta.a == 1),
        ("(a == 1 and\n b == 2)", (meta.a == 1) & (meta.b == 2)),
        ("not not a == 1", Not(Not(meta.a == 1))),
    ],
)
def test_accepted(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("len(name) > 3", 1, "calls"),
        ("pitch > 60 and __import__('os').system('true') == 0", 16, "calls"),
        ("a.b == 1", 1, "attributes"),
        ("a[0] == 1", 1, "subscripts"),
        ("(lambda: 1) == a", 2, "lambdas"),
        ("f'{a}' == b", 1, "f-strings"),
        ("a == f'{b}'", 6, "f-strings"),
        ("pitch + 1 > 3", 1, "arithmetic"),
        ("(x := 1) == a", 2, "assignments"),
        ("pitch is None", 1, "operator Is"),
        ("pitch", 1, "alone"),
        ("a == b", 6, "two keys"),
        ("1 == 1", 1, "key"),
        ("pitch == x_value and 1", 10, "quote strings"),
        ("pitch == -True", 10, "sign"),
        ("pitch == [1]", 10, "value"),
        ("pitch in 'abc'", 10, "list or tuple"),
        ("pitch == b'x'", 10, "bytes"),
        ("pitch == 1j", 10, "complex"),
        ("pitch == 1e999", 10, "finite"),
        ("pitch < None", 1, "None"),
        ("é == 1", 1, "not valid"),
        ("a == 1 if b else 2", 1, "comparison"),
        ("pitch >", 8, "syntax"),
        ("pitch == (1", 10, "syntax"),
        ("a === 1", 5, "syntax"),
        ("a == 'x", 6, "syntax"),
        ("a == 1; b == 2", 7, "syntax"),
        ("a == {1}", 6, "value"),
        ("a == ...", 6, "ellipsis"),
        ("[a == 1]", 1, "comparison"),
    ],
)
def test_refused_with_a_pointer(text, column, words):
    with pytest.raises(QueryError) as info:
        parse(text)
    message = str(info.value)
    assert words.lower() in message.lower(), message
    assert f"column {column})" in message, message
    caret_line = message.splitlines()[-1]
    assert caret_line.index("^") - 4 == column - 1


def test_limits():
    with pytest.raises(QueryError, match="limit"):
        parse("a == 1 and " * 2000 + "a == 1")
    with pytest.raises(QueryError):
        parse("(" * 300 + "a == 1" + ")" * 300)
    with pytest.raises(QueryError):
        parse(b"a == 1")  # type: ignore[arg-type]


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True).filter(
    lambda s: s not in {"True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "lambda"}
)
scalars = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    st.booleans(),
    st.none(),
)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_str_round_trips(data):
    key = data.draw(names)
    value = data.draw(scalars)
    op = data.draw(st.sampled_from(["==", "!="] if value is None else ["==", "!=", "<", "<=", ">", ">="]))
    e = parse(f"{key} {op} {value!r}")
    assert parse(str(e)) == e == parse(str(~~e)).part.part
    assert e.key == key and e.op == op and e.value == value and type(e.value) is type(value)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_query_error(text):
    try:
        parse(text)
    except QueryError:
        pass


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "the query is empty"),
        ("   \n ", "the query is empty"),
        ("lang = 'en'", "use =="),
        ("x == " + "9" * 400, "beyond 64 bits"),
        ("x > -" + "9" * 30, "beyond 64 bits"),
        ("\uff53ize > 3", "ASCII identifiers"),  # a full-width s: Python itself would read it as `size`
        ("a == '\udc80'", "lone surrogate"),
    ],
)
def test_hostile_and_mistaken_queries_are_refused_clearly(text, says):
    with pytest.raises(QueryError, match=re.escape(says)):
        parse(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_query_error_only(text):
    try:
        parse(text)
    except QueryError:
        pass


def test_a_key_no_entry_holds_warns_with_the_closest_keys(tmp_path):
    import numpy as np

    from lardon_store.testing import store_from_arrays

    store = store_from_arrays(
        tmp_path / "s", [("a", np.arange(2), {"lang": "en", "tags": ["x"]}), ("b", np.arange(2), {})]
    )
    with pytest.warns(ls.UnknownKeyWarning, match="did you mean 'lang'"):
        assert len(store.where("Lang == 'fr'")) == 0
    with pytest.warns(ls.UnknownKeyWarning, match="'nothing_like_it'"):
        assert len(store.all().where(meta.nothing_like_it.exists())) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.where("lang == 'en'").keys == ["a"]
        assert len(store.where(meta.tags.exists())) == 0  # a list-valued key is known: no warning
