"""The shard writer against a model: every array's bytes at its offset, zero padding between them, sizes, shards."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lardon_store.format.layout import ALIGNMENT
from lardon_store.io.shards import SMALL_BLOCK_BYTES, SMALL_BYTES, ShardWriter

sizes = st.one_of(
    st.integers(0, 200),  # tiny: gathered into blocks
    st.integers(SMALL_BYTES - 70, SMALL_BYTES + 70),  # around the gathering limit
    st.integers(SMALL_BYTES, 3 * SMALL_BYTES),  # written on their own
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(sizes, min_size=1, max_size=60),
    max_shard=st.sampled_from([4096, 300_000, 1 << 30]),
    syncs=st.sets(st.integers(0, 59)),
    filler=st.integers(0, 60),
)
@example(lengths=[0, 65466], max_shard=4096, syncs=set(), filler=0)  # (an empty array, then a large one)
def test_every_array_lands_at_its_offset(tmp_path_factory, lengths, max_shard, syncs, filler):
    root = tmp_path_factory.mktemp("shards")
    writer = ShardWriter(root, {}, max_shard)
    # Enough small arrays first to fill more than one gathered block, so that blocks are flushed mid-stream.
    small = [np.full(1000 + i % 7, i % 251, np.uint8) for i in range(filler * (SMALL_BLOCK_BYTES // 1000) // 20)]
    arrays = small + [np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8) for n in lengths]
    placed, sizes_seen = [], {}
    try:
        for i, array in enumerate(arrays):
            path, offset, nbytes, crc = writer.append(array)
            assert offset % ALIGNMENT == 0 and nbytes == array.nbytes
            placed.append((path, offset, array, crc))
            if i in syncs:
                sizes_seen.update(writer.sync())
        sizes_seen.update(writer.sync())
    finally:
        writer.close()
    files = {path: (root / path).read_bytes() for path in {p for p, _, _, _ in placed}}
    assert {path: len(data) for path, data in files.items()} == {p: sizes_seen[p] for p in files}
    covered = {path: np.zeros(len(data), bool) for path, data in files.items()}
    for path, offset, array, crc in placed:
        data = files[path]
        assert data[offset : offset + array.nbytes] == array.tobytes()
        assert (crc.result() if hasattr(crc, "result") else crc).startswith("xxh3:")
        covered[path][offset : offset + array.nbytes] = True
    for path, data in files.items():
        gaps = np.frombuffer(data, np.uint8)[~covered[path]]
        assert not gaps.any()  # (padding is zeros)
        if len(data) > max_shard:  # (only an array larger than a shard gets a shard of its own)
            assert sum(p == path and a.nbytes > 0 for p, _, a, _ in placed) == 1
    assert all(os.path.getsize(root / path) == size for path, size in sizes_seen.items())
