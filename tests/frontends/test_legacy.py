"""Importing folders of the original lardon: parsing.ldn read by a restricted unpickler, files checked."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import lardon_store as lardon
from lardon_store import CorruptStoreError, LegacyNotImportedError, LegacyStoreError, UnsafeLegacyCatalogError
from lardon_store.cli import main
from lardon_store.io.shards import resolve_shard_path


def write_legacy(root: Path, arrays: dict[str, np.ndarray], metadata=None, protocol: int = 4, overrides=None) -> Path:
    """A folder as the original lardon wrote it: raw C-order files and a pickled dict ``parsing.ldn``."""
    root.mkdir(parents=True, exist_ok=True)
    catalog = {}
    for rel, x in arrays.items():
        x = np.ascontiguousarray(x)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        x.tofile(root / rel)
        record = {"shape": x.shape, "strides": x.strides, "dtype": x.dtype, **(metadata or {}).get(rel, {})}
        record.update((overrides or {}).get(rel, {}))
        catalog[rel] = record
    (root / "parsing.ldn").write_bytes(pickle.dumps(catalog, protocol=protocol))
    return root


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "dumb_0.npy": rng.standard_normal((3, 5, 7)).astype(np.float32),
        "dumb_1.npy": np.arange(24, dtype=">i8").reshape(2, 3, 4),
        "sub/dumb_2.npy": rng.integers(0, 9, (4, 6)).astype(np.uint8),
        "scalar.npy": np.array(2.5),
    }


SAMPLE_META = {
    "dumb_0.npy": {"label": "violin", "pitch": np.int64(60), "gain": np.float32(0.5)},
    "sub/dumb_2.npy": {"tags": ("a", "b"), "extra": {"x": 1}, "flag": np.bool_(True)},
}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("copy", [False, True])
def test_import_reads_the_same_arrays(tmp_path, protocol, copy):
    arrays = sample_arrays()
    root = write_legacy(tmp_path / "parsed", arrays, SAMPLE_META, protocol=protocol)
    with pytest.raises(LegacyNotImportedError, match="import_lardon"):
        lardon.parse_folder(root)
    store = lardon.import_lardon(root, copy=copy)
    assert len(store) == len(arrays)
    lst = lardon.parse_folder(root, drop_metadata=True)
    assert lst.keys == ["dumb_0", "dumb_1", "scalar", "sub/dumb_2"]
    by_key = {k: arrays[k + ".npy"] for k in lst.keys}
    for k, (data, _md) in zip(lst.keys, lst):
        np.testing.assert_array_equal(data, by_key[k])
        assert data.dtype == by_key[k].dtype
    assert lst[0][1] == {"label": "violin", "pitch": 60, "gain": 0.5}
    assert lst[3][1] == {"tags": ["a", "b"], "extra": {"x": 1}, "flag": True}
    np.testing.assert_array_equal(lst[0, 1, 2:4, ::3][0], arrays["dumb_0.npy"][1, 2:4, ::3])
    blobs = list((root / "blobs").glob("shard-*.bin"))
    assert bool(blobs) == copy
    with store.engine.connect() as conn:
        paths = sorted(p for (p,) in conn.exec_driver_sql("SELECT path FROM shards"))
    if not copy:
        assert paths == sorted(arrays)
    with pytest.raises(LegacyStoreError, match="already has"):
        lardon.import_lardon(root)


def test_in_place_import_sees_later_truncation(tmp_path):
    root = write_legacy(tmp_path / "parsed", sample_arrays())
    lardon.import_lardon(root)
    with open(root / "dumb_0.npy", "r+b") as f:
        f.truncate(10)
    lst = lardon.parse_folder(root)
    with pytest.raises(CorruptStoreError, match="dumb_0.npy"):
        lst[0]
    np.testing.assert_array_equal(lst[1], sample_arrays()["dumb_1.npy"])


class _RunsShell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("where", ["top", "metadata", "dtype"])
def test_malicious_pickle_is_refused_without_running(tmp_path, where):
    marker = tmp_path / "marker"
    payload = _RunsShell(f"touch {marker}")
    root = tmp_path / "parsed"
    arrays = {"a.npy": np.zeros(3)}
    if where == "top":
        root.mkdir()
        np.zeros(3).tofile(root / "a.npy")
        (root / "parsing.ldn").write_bytes(pickle.dumps(payload))
    elif where == "metadata":
        write_legacy(root, arrays, {"a.npy": {"label": payload}})
    else:
        write_legacy(root, arrays, overrides={"a.npy": {"dtype": payload}})
    with pytest.raises(UnsafeLegacyCatalogError, match=r"(posix|os)\.system.*NOT executed"):
        lardon.import_lardon(root)
    assert not marker.exists()
    assert not (root / "catalog.sqlite").exists()
    assert main(["import-lardon", str(root)]) == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    [_Evaluates(), np.arange(3), np.dtype("O").type, np.dtypes.ObjectDType],
    ids=["eval", "ndarray", "object-scalar-type", "object-dtype-class"],
)
def test_other_globals_are_refused(tmp_path, value):
    root = write_legacy(tmp_path / "parsed", {"a.npy": np.zeros(2)}, {"a.npy": {"v": value}})
    with pytest.raises(UnsafeLegacyCatalogError, match="NOT executed"):
        lardon.import_lardon(root)


def test_numpy1_scalar_and_dtype_class_pickles(tmp_path):
    root = write_legacy(tmp_path / "parsed", {"a.npy": np.zeros(2)}, {"a.npy": {"v": np.float64(1.5)}}, protocol=2)
    data = (root / "parsing.ldn").read_bytes()
    assert b"numpy._core.multiarray" in data
    (root / "parsing.ldn").write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    lardon.import_lardon(root)
    assert lardon.parse_folder(root).metadata(0) == {"v": 1.5}
    root2 = write_legacy(
        tmp_path / "p2", {"a.npy": np.zeros(2)}, overrides={"a.npy": {"dtype": np.dtypes.Float64DType}}
    )
    lardon.import_lardon(root2)
    assert lardon.parse_folder(root2).dtype == np.float64


def test_truncated_file_refused_naming_it(tmp_path):
    root = write_legacy(tmp_path / "parsed", sample_arrays())
    with open(root / "sub" / "dumb_2.npy", "r+b") as f:
        f.truncate(5)
    with pytest.raises(LegacyStoreError, match=r"dumb_2\.npy: data file is truncated: 5 bytes.*needs 24"):
        lardon.import_lardon(root)
    assert not (root / "catalog.sqlite").exists()


def test_missing_and_oversized_files(tmp_path):
    root = write_legacy(tmp_path / "parsed", {"a.npy": np.zeros(2), "b.npy": np.zeros(2)})
    with open(root / "b.npy", "ab") as f:
        f.write(b"x")
    with pytest.raises(LegacyStoreError, match="b.npy: data file is larger"):
        lardon.import_lardon(root)
    (root / "b.npy").unlink()
    with pytest.raises(LegacyStoreError, match="b.npy: data file is missing"):
        lardon.import_lardon(root)


@pytest.mark.parametrize(
    "strides,ok",
    [((8, 24), False), ((-24, 8), False), ((24, 8), True)],
    ids=["fortran", "negative", "c-order"],
)
def test_strides_checked(tmp_path, strides, ok):
    root = write_legacy(tmp_path / "parsed", {"a.npy": np.zeros((4, 3))}, overrides={"a.npy": {"strides": strides}})
    if ok:
        lardon.import_lardon(root)
    else:
        with pytest.raises(LegacyStoreError, match="not C-contiguous"):
            lardon.import_lardon(root)


def test_size_one_axes_ignore_strides(tmp_path):
    x = np.zeros((1, 3))
    root = write_legacy(tmp_path / "parsed", {"a.npy": x}, overrides={"a.npy": {"strides": (8, 8)}})
    lardon.import_lardon(root)


@pytest.mark.parametrize("name", ["../outside.npy", "/abs.npy", "a/./b.npy", "a\\b.npy"])
def test_paths_leaving_the_folder_refused(tmp_path, name):
    root = tmp_path / "parsed"
    root.mkdir()
    (tmp_path / "outside.npy").write_bytes(np.zeros(2).tobytes())
    record = {"shape": (2,), "strides": (8,), "dtype": np.dtype("f8")}
    (root / "parsing.ldn").write_bytes(pickle.dumps({name: record}))
    with pytest.raises(LegacyStoreError, match="not a plain path"):
        lardon.import_lardon(root)


def test_symlink_out_refused(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(np.zeros(2).tobytes())
    root = write_legacy(tmp_path / "parsed", {"a.npy": np.zeros(2)})
    (root / "a.npy").unlink()
    (root / "a.npy").symlink_to(outside)
    with pytest.raises(LegacyStoreError, match="link out of the store"):
        lardon.import_lardon(root)


def test_resolve_shard_path_rules(tmp_path):
    (tmp_path / "d").mkdir()
    assert resolve_shard_path(tmp_path, "d/file.npy") == tmp_path / "d" / "file.npy"
    assert resolve_shard_path(tmp_path, "blobs/shard-000001.bin") == tmp_path / "blobs" / "shard-000001.bin"
    for bad in ["../x", "/abs/x.bin", "", "d/../x", "d//x", "./x"]:
        with pytest.raises(CorruptStoreError, match="invalid shard path"):
            resolve_shard_path(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path / "d")
    with pytest.raises(CorruptStoreError, match="link out"):
        resolve_shard_path(tmp_path, "link/file.npy")


def test_bad_records(tmp_path):
    root = tmp_path / "parsed"
    root.mkdir()
    np.zeros(2).tofile(root / "a.npy")
    for catalog, match in [
        ([1, 2], "not the dict"),
        ({"a.npy": {"shape": (2,)}}, "lacks"),
        ({"a.npy": {"shape": (-2,), "strides": (8,), "dtype": "f8"}}, "invalid shape"),
        ({"a.npy": {"shape": (2,), "strides": (8,), "dtype": "U3"}}, "unsupported dtype"),
        ({"a.npy": {"shape": (2,), "strides": (8,), "dtype": "f8", "bad key": 1}}, "not an identifier"),
    ]:
        (root / "parsing.ldn").write_bytes(pickle.dumps(catalog))
        with pytest.raises((LegacyStoreError, lardon.InvalidDataError), match=match):
            lardon.import_lardon(root)
    (root / "parsing.ldn").write_bytes(b"not a pickle")
    with pytest.raises(LegacyStoreError, match="not a readable"):
        lardon.import_lardon(root)
    assert not (root / "catalog.sqlite").exists()


def test_cli_import(tmp_path, capsys):
    root = write_legacy(tmp_path / "parsed", sample_arrays())
    assert main(["import-lardon", str(root), "--copy"]) == 0
    assert "imported 4 entries (copied into shards)" in capsys.readouterr().out
    np.testing.assert_array_equal(lardon.parse_folder(root)[1], sample_arrays()["dumb_1.npy"])
    assert main(["import-lardon", str(tmp_path)]) == 1
    assert "no parsing.ldn" in capsys.readouterr().err


def test_control_the_payload_is_real(tmp_path):
    """The malicious payload above does run under a plain unpickler: the refusal test could fail."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {marker}")))
    assert marker.exists()


def test_gc_and_verify_leave_files_imported_in_place_alone(tmp_path):
    arrays = sample_arrays()
    root = write_legacy(tmp_path / "parsed", arrays)
    lardon.import_lardon(root)
    before = {rel: (root / rel).read_bytes() for rel in arrays}
    assert lardon.gc_store(root) == 0
    assert {rel: (root / rel).read_bytes() for rel in arrays} == before
    assert lardon.verify_store(root).ok
    for key, data in zip(lardon.open(root).keys, lardon.open(root)):
        np.testing.assert_array_equal(data, arrays[key + ".npy"])
