"""The lardon front end: open time, random crops and legacy import, against raw numpy memmaps.

Run: ``python benchmarks/bench_lardon.py [--entries 20000] [--spectrograms 40] [--frames 600]``. It builds its data in
a temporary folder and prints timings and ratios (lower is better for lardon_store / numpy).
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

import lardon_store as lardon


def best_of(fn, repeat: int = 5, number: int = 200) -> float:
    """Best mean seconds per call of ``fn`` over ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t) / number)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=20000, help="small entries for the open-time test")
    parser.add_argument("--spectrograms", type=int, default=40, help="(2, 513, frames) float32 entries for crops")
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        t = time.perf_counter()
        with lardon.LardonParser(None, root / "many") as p:
            for i in range(args.entries):
                p.register(np.full(8, i, np.float32), {"i": i})
        register_s = time.perf_counter() - t
        t = time.perf_counter()
        lst = lardon.parse_folder(root / "many")
        n = len(lst)
        open_s = time.perf_counter() - t
        print(f"LardonParser: {args.entries} entries registered in {register_s:.2f} s")
        print(f"parse_folder: {n} entries opened in {open_s * 1e3:.1f} ms")

        legacy = root / "legacy"
        legacy.mkdir()
        catalog = {}
        for k in range(args.spectrograms):
            x = rng.standard_normal((2, 513, args.frames + k)).astype(np.float32)
            x.tofile(legacy / f"spec_{k:04d}.npy")
            np.save(root / f"raw_{k:04d}.npy", x)
            catalog[f"spec_{k:04d}.npy"] = {"shape": x.shape, "strides": x.strides, "dtype": x.dtype, "k": k}
        (legacy / "parsing.ldn").write_bytes(pickle.dumps(catalog))
        total_mb = sum(np.prod(v["shape"]) * 4 for v in catalog.values()) / 1e6
        t = time.perf_counter()
        lardon.import_lardon(legacy)
        in_place_s = time.perf_counter() - t
        copied = root / "copied"
        copied.mkdir()
        for f in legacy.glob("spec_*"):
            (copied / f.name).write_bytes(f.read_bytes())
        (copied / "parsing.ldn").write_bytes((legacy / "parsing.ldn").read_bytes())
        t = time.perf_counter()
        lardon.import_lardon(copied, copy=True)
        copy_s = time.perf_counter() - t
        print(f"import_lardon: {args.spectrograms} files, {total_mb:.0f} MB: in place {in_place_s:.2f} s, "
              f"--copy {copy_s:.2f} s")  # fmt: skip

        lst = lardon.parse_folder(legacy, seed=0)
        raw = [np.load(root / f"raw_{k:04d}.npy", mmap_mode="r") for k in range(args.spectrograms)]
        starts = rng.integers(0, args.frames - 64, 4096)
        picks = rng.integers(0, args.spectrograms, 4096)
        it = iter(range(1 << 30))

        def ours():
            j = next(it) % 4096
            lst[int(picks[j]), :, :, int(starts[j]) : int(starts[j]) + 64]

        def numpy_memmap():
            j = next(it) % 4096
            np.array(raw[picks[j]][:, :, starts[j] : starts[j] + 64])

        def ours_random():
            lst[int(picks[next(it) % 4096]), :, :, lardon.randslice(64)]

        a, b, c = best_of(ours), best_of(numpy_memmap), best_of(ours_random)
        print(f"crop x[i][:, :, t:t+64] of (2, 513, ~{args.frames}) float32: lardon_store {a * 1e6:.0f} us, "
              f"numpy memmap {b * 1e6:.0f} us, ratio {a / b:.2f}")  # fmt: skip
        print(f"crop with randslice(64): {c * 1e6:.0f} us, ratio to numpy memmap {c / b:.2f}")


if __name__ == "__main__":
    main()
