"""The ``lardon-store`` command: a thin layer over the Python API (each command names its Python twin)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence

from .compiler import compile_store, default_callback
from .errors import LardonStoreError
from .store import migrate_store, open_store

COMMANDS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def command(name: str, help: str):  # noqa: A002
    """Register ``function(args) -> int`` as subcommand ``name``; its docstring is the long help."""

    def register(function):
        COMMANDS[name] = (help, function)
        return function

    return register


def load_callback(spec: str | None) -> Callable:
    """The callback named ``module:function`` (or a built-in name such as ``audio``)."""
    if spec is None or spec == "npy":
        return default_callback
    if spec == "audio":
        spec = "lardon_store.callbacks:audio"
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--callback {spec!r}: give it as module:function, e.g. mypackage.loaders:load_spectrogram")
    return getattr(importlib.import_module(module), name)


@command("compile", "compile a source folder into a store (incremental)")
def cmd_compile(args: argparse.Namespace) -> int:
    """Compile SRC into the store DST. Python twin: lardon_store.compile(src, dst, callback, valid_exts).

    Example:
        lardon-store compile raw/ store/ --ext .npy
        lardon-store compile raw/ store/ --callback mypkg.loaders:load --ext .wav --ext .flac
        lardon-store compile sounds/ store/ --callback audio --ext .wav --ext .flac --workers 2
    """
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", disable=args.quiet or None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    store = compile_store(
        args.src,
        args.dst,
        load_callback(args.callback),
        args.ext or None,
        force=args.force,
        progress=progress,
        workers=args.workers,
    )
    bar.close()
    print(store.last_compile)
    return 0


@command("info", "summarise a store: entries, bytes, dtypes, shapes, metadata keys")
def cmd_info(args: argparse.Namespace) -> int:
    """Print a store's summary. Python twin: lardon_store.open(path).info().

    Example:
        lardon-store info store/
        lardon-store info store/ --json
    """
    info = open_store(args.store).info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(format_info(info))
    return 0


def format_info(info: dict) -> str:
    """The human-readable form of Store.info()."""
    lines = [
        f"store      {info['root']} (catalog revision {info['revision']})",
        f"entries    {info['entries']:,} ({info['bytes'] / 1e6:,.1f} MB in {info['shards']} shard(s))",
        "dtypes     " + ", ".join(f"{d}: {n:,}" for d, n in sorted(info["dtypes"].items())),
    ]
    for nd, (lo, hi) in sorted(info["shape_ranges"].items()):
        dims = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(lo, hi))
        lines.append(f"shapes     {nd}-d: ({dims})")
    lines.append("metadata   " + (", ".join(info["metadata_keys"]) or "(none)"))
    for failure in info["failed_sources"]:
        lines.append(f"FAILED     {failure['path']}: {failure['error']}")
    return "\n".join(lines)


@command("migrate", "upgrade a store's catalog to this version's schema")
def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the catalog in place. Python twin: lardon_store.migrate_store(path).

    Example:
        lardon-store migrate store/
    """
    print(f"{args.store}: catalog at revision {migrate_store(args.store)}")
    return 0


@command("demo", "build a synthetic dataset, compile it, time random crops against raw numpy")
def cmd_demo(args: argparse.Namespace) -> int:
    """Make a synthetic spectrogram dataset in DIR, compile it, print its summary and timed crops.

    Python twin: lardon_store.demo.run_demo(directory).

    Example:
        lardon-store demo /tmp/lardon-demo
    """
    from .demo import run_demo

    run_demo(args.dir, n_files=args.files)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="lardon-store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help=COMMANDS["compile"][0], description=cmd_compile.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--callback", help="module:function returning (array, metadata); default loads .npy")
    p.add_argument("--ext", action="append", help="a file extension to compile (repeatable), e.g. --ext .npy")
    p.add_argument("--force", action="store_true", help="recompile every source")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=0, help="run the callback in N processes (default 0: in this one)")
    for name in ("info", "migrate"):
        p = sub.add_parser(name, help=COMMANDS[name][0], description=COMMANDS[name][1].__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.add_argument("store")
        if name == "info":
            p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("demo", help=COMMANDS["demo"][0], description=cmd_demo.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("dir", nargs="?", default="lardon-demo", help="folder to build in (default ./lardon-demo)")
    p.add_argument("--files", type=int, default=200, help="number of synthetic source files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lardon-store``."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except LardonStoreError as exc:
        print(f"lardon-store {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
