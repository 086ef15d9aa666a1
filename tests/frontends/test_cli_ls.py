"""`lardon-store ls`: filtered listings in each output format."""

from __future__ import annotations

import csv
import io
import json

import pytest
from query_stores import empty_store, fill_store

from lardon_store.cli import COMMANDS, main


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("ls")
    mds = [{"pitch": 50 + i, "inst": "violin" if i % 2 else "cello, solo", "tags": ["x", i]} for i in range(8)]
    mds.append({"inst": None})
    fill_store(empty_store(root / "template"), root / "store", mds)
    return str(root / "store")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_table(store_path, capsys):
    code, out, _ = run(capsys, "ls", store_path, "--where", "pitch > 54 and inst == 'violin'")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["key", "shape", "dtype", "metadata"]
    assert [line.split()[0] for line in lines[1:-1]] == ["e0005", "e0007"]
    assert "(2,)" in lines[1] and "<i2" in lines[1] and '"pitch": 55' in lines[1]
    assert lines[-1] == "(2 entries)"


def test_ls_json(store_path, capsys):
    code, out, _ = run(capsys, "ls", store_path, "--where", "pitch >= 52", "--limit", "3", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["key"] for r in rows] == ["e0002", "e0003", "e0004"]
    assert rows[0] == {"key": "e0002", "shape": [2], "dtype": "<i2",
                       "metadata": {"pitch": 52, "inst": "cello, solo", "tags": ["x", 2]}}  # fmt: skip


def test_ls_csv_without_filter(store_path, capsys):
    code, out, _ = run(capsys, "ls", store_path, "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0] == ["key", "shape", "dtype", "inst", "pitch", "tags"]
    assert rows[1] == ["e0000", "2", "<i2", "cello, solo", "50", '["x", 0]']
    assert rows[-1] == ["e0008", "2", "<i2", "null", "", ""]
    assert len(rows) == 10


def test_ls_empty_result_and_errors(store_path, capsys):
    code, out, _ = run(capsys, "ls", store_path, "--where", "pitch > 1000", "--format", "json")
    assert code == 0 and json.loads(out) == []
    code, out, err = run(capsys, "ls", store_path, "--where", "pitch > len(inst)")
    assert code == 1 and out == "" and "function calls are not allowed" in err and "^" in err


def test_ls_has_help_with_an_example():
    assert "Example:" in COMMANDS["ls"][1].__doc__
