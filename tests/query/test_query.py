"""Metadata queries against an independent Python oracle, index use, injection attempts, selection helpers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_helpers import catalog_sql
from query_stores import empty_store, fill_store

from lardon_store import InvalidDataError, QueryError, meta
from lardon_store.format.layout import CATALOG_NAME
from lardon_store.query import And, Between, Compare, Exists, In, Not, Or, explain, parse

KEYS = ["a", "b", "c"]
SCALARS = [0, 1, 2, -1, 3, 2**40, 0.0, 1.0, 0.5, -1.5, 2.0, 1e300, True, False, "", "a", "b", "A", "é", "'", None]
OPS = ["==", "!=", "<", "<=", ">", ">="]


def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    if isinstance(v, str):
        return "str"
    return "other"


def oracle(e, md) -> bool:
    """The documented semantics, written independently of lardon_store.query."""
    if isinstance(e, And):
        return all(oracle(p, md) for p in e.parts)
    if isinstance(e, Or):
        return any(oracle(p, md) for p in e.parts)
    if isinstance(e, Not):
        return not oracle(e.part, md)
    if e.key not in md or kind(md[e.key]) == "other":
        return False
    x = md[e.key]
    if isinstance(e, Exists):
        return True
    if isinstance(e, In):
        return any(kind(x) == kind(v) and x == v for v in e.values)
    if isinstance(e, Between):
        return kind(x) == kind(e.low) and e.low <= x <= e.high
    v = e.value
    if v is None:
        return x is None if e.op == "==" else x is not None
    if kind(x) != kind(v):
        return False
    return {"==": x == v, "!=": x != v, "<": x < v, "<=": x <= v, ">": x > v, ">=": x >= v}[e.op]


metadata_values = st.one_of(st.sampled_from(SCALARS), st.just([1, 2]), st.just({"b": 1}))
metadatas = st.lists(st.dictionaries(st.sampled_from(KEYS), metadata_values), min_size=150, max_size=300)
keys = st.sampled_from(KEYS)
values = st.sampled_from(SCALARS)


@st.composite
def compares(draw):
    key, op, value = draw(keys), draw(st.sampled_from(OPS)), draw(values)
    if value is None and op not in ("==", "!="):
        op = "=="
    return Compare(key, op, value)


@st.composite
def betweens(draw):
    pool = draw(st.sampled_from([[v for v in SCALARS if kind(v) == k] for k in ("num", "str", "bool")]))
    lo, hi = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
    return Between(draw(keys), lo, hi)


leaves = st.one_of(
    compares(),
    st.builds(In, keys, st.lists(values, max_size=4).map(tuple)),
    betweens(),
    st.builds(Exists, keys),
)
exprs = st.recursive(
    leaves,
    lambda sub: st.one_of(
        st.lists(sub, min_size=2, max_size=3).map(lambda p: And(tuple(p))),
        st.lists(sub, min_size=2, max_size=3).map(lambda p: Or(tuple(p))),
        sub.map(Not),
    ),
    max_leaves=6,
)


def has_exists(e) -> bool:
    if isinstance(e, (And, Or)):
        return any(has_exists(p) for p in e.parts)
    if isinstance(e, Not):
        return has_exists(e.part)
    return isinstance(e, Exists)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return empty_store(tmp_path_factory.mktemp("template"))


counter = itertools.count()


def make(template, tmp_path, mds):
    return fill_store(template, tmp_path / f"s{next(counter)}", mds)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mds=metadatas, queries=st.lists(exprs, min_size=4, max_size=8))
def test_queries_match_the_oracle(template, tmp_path, mds, queries):
    store = make(template, tmp_path, mds)
    all_keys = [f"e{i:04d}" for i in range(len(mds))]
    for e in queries:
        expected = [k for k, md in zip(all_keys, mds) if oracle(e, md)]
        assert store.where(e).keys == expected, str(e)
        assert store.select(e.sql()).keys == expected, str(e)  # the SQL form, run by SQLite
        assert [k for k, md in zip(all_keys, mds) if e.match(md)] == expected
        complement = store.where(~e).keys
        assert sorted(complement + expected) == all_keys
        if not has_exists(e):
            assert store.where(str(e)).keys == expected, str(e)
    # refining a selection gives the subset that matches both, in the selection's order
    first, second = queries[0], queries[1]
    sel = store.where(first).order_by("a", descending=True)
    refined = sel.where(second)
    assert refined.keys == [k for k in sel.keys if oracle(second, mds[int(k[1:])])]
    limited = sel.limit(10)
    assert set(limited.where(second).keys) <= set(limited.keys)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mds=metadatas)
def test_order_by_and_columns(template, tmp_path, mds):
    store = make(template, tmp_path, mds)
    sel = store.where()
    ordered = sel.order_by("a")
    rank = {"num": 0, "bool": 1, "str": 2, "null": 3}

    def sort_key(i):
        md = mds[i]
        if "a" not in md or kind(md["a"]) == "other":
            return (4, 0, "", i)
        x = md["a"]
        return (rank[kind(x)], float(x) if kind(x) in ("num", "bool") else 0.0, x if isinstance(x, str) else "", i)

    assert ordered.keys == [f"e{i:04d}" for i in sorted(range(len(mds)), key=sort_key)]
    cols = ordered.metadata_columns(["a", "b"])
    for pos, k in enumerate(ordered.keys):
        md = mds[int(k[1:])]
        for key in ("a", "b"):
            got = cols[key][pos]
            assert (got, type(got)) == (md.get(key), type(md.get(key))) or (
                kind(md.get(key)) == "num" and got == md[key]
            )


def test_semantics_examples(template, tmp_path):
    mds = [{"p": 60}, {"p": 60.0}, {"p": True}, {"p": 1}, {"p": "60"}, {"p": None}, {}, {"p": [60]}, {"p": 61.5}]
    s = make(template, tmp_path, mds)

    def ids(*conds, **kw):
        return [int(k[1:]) for k in s.where(*conds, **kw).keys]

    assert ids(meta.p == 60) == [0, 1]
    assert ids(meta.p == True) == [2]  # noqa: E712
    assert ids(meta.p == 1) == [3]
    assert ids(meta.p != 60) == [3, 8] and ids(meta.p != "x") == [4]
    assert ids(~(meta.p == 60)) == [2, 3, 4, 5, 6, 7, 8]
    assert ids(meta.p == None) == [5]  # noqa: E711
    assert ids(meta.p != None) == [0, 1, 2, 3, 4, 8]  # noqa: E711
    assert ids(meta.p.exists()) == [0, 1, 2, 3, 4, 5, 8]
    assert ids(meta.p.isin([])) == []
    assert ids(meta.p.isin([60, "60", None])) == [0, 1, 4, 5]
    assert ids(meta.p.between(60, 61.5)) == [0, 1, 8]
    assert ids("p > 60.5") == [8] == ids(p=61.5)
    assert ids(meta.p >= 1, meta.p < 61) == [0, 1, 3]
    assert ids("p not in [60]") == [2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(QueryError):
        meta.p < None  # noqa: B015
    with pytest.raises(QueryError):
        meta.p.between(1, "z")
    with pytest.raises(QueryError, match="truth value"):
        s.where(0 < meta.p < 5)
    with pytest.raises(QueryError):
        meta.p == float("nan")  # noqa: B015
    with pytest.raises(QueryError):
        meta.p == [1]  # noqa: B015


def test_expressions_are_immutable_and_hashable():
    a, b = meta.pitch > 60, meta["pitch"] > 60
    assert a == b and hash(a) == hash(b) and len({a, b, ~a}) == 2
    assert parse("pitch > 60") == a and parse("60 < pitch") == a
    assert parse("a == 1 and (b == 'x' or not c == None)") == (meta.a == 1) & ((meta.b == "x") | ~(meta.c == None))  # noqa: E711
    with pytest.raises(AttributeError):
        a.value = 3
    with pytest.raises(AttributeError):
        meta.pitch.key = "x"
    assert hash(meta.pitch) == hash(meta["pitch"])
    assert (meta.a == True) != (meta.a == 1) and len({meta.a == True, meta.a == 1, meta.a == 1.0}) == 2  # noqa: E712
    assert meta.a.isin([True]) != meta.a.isin([1])


@pytest.mark.sqlite_only  # SQLite's query plans (EXPLAIN QUERY PLAN's wording)
def test_equality_and_range_filters_use_an_index(template, tmp_path):
    s = make(template, tmp_path, [{"pitch": i % 100, "inst": f"i{i % 7}", "ok": i % 2 == 0} for i in range(300)])
    for e in [
        meta.pitch == 60,
        meta.pitch > 60,
        meta.pitch.between(20, 30),
        meta.pitch >= 0,
        meta.inst == "i3",
        meta.inst < "i3",
        meta.ok == True,  # noqa: E712
        (meta.inst == "i3") & (meta.pitch > 60),
        meta.pitch.isin([1, 2, 3]),
        "inst == 'i1' and 10 <= pitch < 20",
    ]:
        plan = explain(s, e)
        steps = [p for p in plan if "meta_values" in p]
        assert steps and all("USING INDEX" in p or "USING COVERING INDEX" in p for p in steps), (e, plan)
        assert not any(p.startswith("SCAN meta_values") for p in plan), (e, plan)


@pytest.mark.sqlite_only  # SQLite's query plans of the statements run on SQLite (KEY_QUERIES)
def test_the_snapshot_reads_each_key_from_a_covering_index(template, tmp_path):
    """where() evaluates on numpy columns loaded per key: those loads must search an index, never scan."""
    from lardon_store.query.snapshot import KEY_QUERIES

    s = make(template, tmp_path, [{"pitch": i % 100, "inst": f"i{i % 7}"} for i in range(300)])
    for sql in KEY_QUERIES:
        plan = [row[-1] for row in catalog_sql(s.root, "EXPLAIN QUERY PLAN " + sql, ("pitch",))]
        assert len(plan) == 1 and plan[0].startswith("SEARCH meta_values USING COVERING INDEX"), (sql, plan)


INJECTIONS = [
    "x'; DROP TABLE entries; --",
    'x"; DROP TABLE meta_values; --',
    '"."',
    'a"."b',
    "$.a",
    "a.b",
    "'); DELETE FROM entries; --",
    "1 OR 1=1",
    "%",
    "_",
    "\\",
]
NUL = "a\x00b"  # refused as a key, and as a value at write time (no catalog text can hold a NUL)


def test_injection_strings_are_refused_as_keys_and_matched_literally_as_values(template, tmp_path):
    with pytest.raises(InvalidDataError, match=r"metadata 'name' holds a NUL character \(\\x00\) at position 1"):
        make(template, tmp_path, [{"name": NUL}])
    mds = [{"name": v, "a": {"b": 1}} for v in INJECTIONS] + [{"name": "plain"}]
    s = make(template, tmp_path, mds)
    assert s.where(meta.name == NUL).keys == [] and s.where(name=NUL).keys == []  # (and never an error)
    for bad_key in [k for k in INJECTIONS if k != "_"] + [NUL, "", "1a", "a-b", "a b", "é", "a\n"]:
        with pytest.raises(QueryError):
            meta[bad_key]
        with pytest.raises(QueryError):
            s.where(**{bad_key: 1}) if bad_key else meta[bad_key]
        with pytest.raises(QueryError):
            s.distinct(bad_key)
        with pytest.raises(QueryError):
            s.where().metadata_columns([bad_key])
        with pytest.raises(QueryError):
            s.where().order_by(bad_key)
    for i, value in enumerate(INJECTIONS):
        assert s.where(meta.name == value).keys == [f"e{i:04d}"]
        assert s.where(name=value).keys == [f"e{i:04d}"]
        assert s.where(meta.name.isin([value])).keys == [f"e{i:04d}"]
        assert s.where(f"name == {value!r}").keys == [f"e{i:04d}"]
    assert s.where(meta.name > "'").keys  # ordering on hostile text is still a plain comparison
    assert s.where("a == 1").keys == [] and s.where(meta.a.exists()).keys == []  # nested values never reached
    assert len(s.where()) == len(mds)
    if (s.root / CATALOG_NAME).exists():
        assert catalog_sql(s.root, "PRAGMA integrity_check") == [("ok",)]
    assert catalog_sql(s.root, "SELECT count(*) FROM entries") == [(len(mds),)]
    assert catalog_sql(s.root, "SELECT count(*) FROM meta_values") == [(len(mds),)]


def test_selection_helpers(template, tmp_path):
    mds = [{"pitch": i, "inst": "violin" if i % 3 == 0 else "cello", "q": [i]} for i in range(12)] + [{"pitch": True}]
    s = make(template, tmp_path, mds)
    sel = s.where(inst="violin").where(meta.pitch >= 3)
    assert sel.keys == ["e0003", "e0006", "e0009"]
    assert np.array_equal(sel[1], np.full(2, 6, np.int16))  # a query's selection reads like any other
    assert [a.tolist() for a in sel[0:2]] == [[3, 3], [6, 6]]
    assert sel.metadata(0) == mds[3]
    assert sel.order_by("pitch", descending=True).limit(2).keys == ["e0009", "e0006"]
    cols = s.where(meta.pitch < 100).metadata_columns(["pitch", "inst", "q", "missing"])
    assert cols["pitch"].dtype == np.int64 and cols["pitch"].tolist() == list(range(12))
    assert cols["inst"].dtype.kind == "U"
    assert cols["q"].dtype == object and cols["q"][5] == [5]
    assert cols["missing"].dtype == object and cols["missing"].tolist() == [None] * 12
    allcols = s.where().metadata_columns(["pitch"])
    assert allcols["pitch"].dtype == object and allcols["pitch"][-1] is True
    assert s.metadata_keys() == {"inst": {"str": 12}, "pitch": {"bool": 1, "int": 12}, "q": {"list": 12}}
    assert s.distinct("inst") == {"cello": 8, "violin": 4}
    with pytest.raises(QueryError, match="by_type"):
        s.distinct("pitch")
    assert s.distinct("pitch", by_type=True)[("bool", True)] == 1
    taken = s.where().take([12, 0, 3])
    assert taken.where(meta.pitch.isin([0, 3, True])).keys == ["e0012", "e0000", "e0003"]


def test_a_pickled_query_selection_still_refines(template, tmp_path):
    s = make(template, tmp_path, [{"p": i} for i in range(10)])
    sel = pickle.loads(pickle.dumps(s.where(meta.p > 3).order_by("p", descending=True)))
    assert sel.where(meta.p < 6).keys == ["e0005", "e0004"]
    assert sel.where(meta.p < 6).order_by("p").keys == ["e0004", "e0005"]


def test_empty_selections(template, tmp_path):
    s = make(template, tmp_path, [{"p": i} for i in range(3)])
    for empty in (s.where(meta.p > 10), s.where().limit(0), s.where().take([])):
        assert empty.order_by("p").keys == [] and empty.where(p=1).keys == []
        assert empty.metadata_columns(["p"])["p"].shape == (0,)


def test_the_sql_form_agrees_with_the_snapshot(template, tmp_path):
    mds = [{"pitch": i % 13, "inst": f"i{i % 5}", "d": i / 7} for i in range(400)]
    s = make(template, tmp_path, mds)
    for e in [
        (meta.inst == "i3") & meta.pitch.between(2, 6),
        (meta.inst == "i3") & (meta.pitch == 4) & (meta.d < 30),
        And((meta.inst == "i1", meta.pitch >= 3, meta.pitch < 9, ~(meta.d > 50), meta.inst.isin(["i1", "i2"]))),
        (meta.inst == "i9") & (meta.pitch == 4),
    ]:
        expected = [f"e{i:04d}" for i, md in enumerate(mds) if e.match(md)]
        assert s.where(e).keys == expected, str(e)
        assert s.select(e.sql()).keys == expected  # the one-statement SQL form agrees
        assert s.where(e).where(meta.pitch != 4).keys == [k for k in expected if mds[int(k[1:])]["pitch"] != 4]
