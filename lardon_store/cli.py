"""The ``lardon-store`` command: a thin layer over the Python API (each command names its Python twin)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from .compiler.callback import default_callback
from .demo import run_demo
from .errors import FieldError, LardonStoreError
from .format.fields import DEFAULT_TOLERANCE
from .legacy import import_lardon
from .maintenance.gc import DEFAULT_KEEP_SECONDS, gc_store
from .maintenance.verify import verify_store
from .query.parser import parse
from .store import compile, migrate_store, open_store

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
    if not module or not name:
        raise UsageError(f"--callback {spec!r}: give it as module:function, e.g. mypackage.loaders:load_spectrogram")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # (as `python -m` does: a module in the current folder is found)
    try:
        loaded = importlib.import_module(module)
    except Exception as exc:  # (the user's module may fail in any way while it is imported)
        raise UsageError(
            f"--callback {spec!r}: module {module!r} cannot be imported ({type(exc).__name__}: {exc})."
        ) from None
    function = getattr(loaded, name, None)
    if not callable(function):
        raise UsageError(f"--callback {spec!r}: module {module!r} has no function {name!r}.")
    return function


class UsageError(Exception):
    """A command-line argument that cannot be used: printed as one line, exit status 2."""


@command("compile", "compile a source folder into a store (incremental)")
def cmd_compile(args: argparse.Namespace) -> int:
    """Compile SRC into the store DST. Python twin: lardon_store.compile(src, dst, callback, valid_exts).

    Example:
        lardon-store compile raw/ store/ --ext .npy
        lardon-store compile raw/ store/ --callback mypkg.loaders:load --ext .wav --ext .flac
        lardon-store compile sounds/ store/ --callback audio --ext .wav --ext .flac --workers 2
        lardon-store compile raw/ store/ --exclude '*.tmp' --exclude 'drafts/*'
        lardon-store compile wavs/ store/ --callback mypkg.features:extract --align audio=0:256 --align mel=-1:1

    --align FIELD=AXIS:RATE lines up the time axes of the fields a callback returns as a dict (see docs/fields.md);
    a later compile without --align uses the alignment recorded with the store.

    --catalog postgresql+psycopg://user@host/dbname keeps a new store's catalog in that PostgreSQL database (the
    folder records the URL, without password, in catalog.url; every other command then finds it there).

    --scheduler tcp://host:8786 runs the callbacks on a running Dask cluster (pip install lardon_store[dask]):
    its workers must see DST at the same path (a shared filesystem) and import the callback's module.
    Python twin: compile(..., executor=distributed.Client(address).get_executor()).

    A source whose last compile failed (with --on-error skip) and that has not changed since is not run again: it
    is listed as a known failure, and the command succeeds.
    """
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", disable=args.quiet or None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    callback = load_callback(args.callback)
    client = _dask_client(args.scheduler) if args.scheduler else None
    try:
        store = compile(
            args.src, args.dst, callback, args.ext or None, force=args.force, progress=progress,
            callback_version=args.callback_version, on_error=args.on_error, workers=args.workers,
            exclude=args.exclude or (), align=dict(args.align) if args.align else None,
            align_tolerance=args.align_tolerance, executor=client.get_executor() if client is not None else None,
            catalog=args.catalog,
        )  # fmt: skip
    finally:
        if client is not None:
            client.close()
    bar.close()
    print(store.last_compile)
    if store.last_compile.known_failures:
        print(f"known failures (unchanged since they failed; change them, or --force, to run them again; `lardon-store "
              f"info {args.dst}` shows why): {', '.join(store.last_compile.known_failures)}")  # fmt: skip
    return 0


@command("info", "summarise a store: entries, bytes, dtypes, shapes, metadata keys")
def cmd_info(args: argparse.Namespace) -> int:
    """Print a store's summary. Python twin: lardon_store.open(path).info().

    Example:
        lardon-store info store/
        lardon-store info store/ --json
    """
    info = open_store(args.store).info()
    print(json.dumps(info.to_dict(), indent=2, default=str) if args.json else info)
    return 0


@command("ls", "list a store's entries, optionally filtered by a metadata query")
def cmd_ls(args: argparse.Namespace) -> int:
    """List entries (key, shape, dtype, metadata). Python twin:
    lardon_store.open(path).select(lardon_store.query.parse(query).sql(), limit=n).rows().

    A single query in a process of its own is answered by SQLite from the metadata indexes: loading the query
    snapshot that where() uses would cost more than it saves.

    Example:
        lardon-store ls store/ --where "instrument == 'violin' and pitch > 60" --limit 20
        lardon-store ls store/ --where "split in ['train', 'valid']" --format csv > train.csv
    """
    store = open_store(args.store)
    sel = store.select(parse(args.where).sql() if args.where is not None else None, limit=args.limit)
    print(format_rows(sel.rows(), args.format), end="")
    return 0


def _shape_dtype(row: dict, sep: str) -> tuple[str, str]:
    """The shape and dtype cells of an ``ls`` row: ``(2, 3)`` and ``<f4``, or one ``field:value`` per field."""
    if "fields" not in row:
        return sep.join(map(str, row["shape"])), row["dtype"]
    fields = row["fields"].items()
    return (
        " ".join(f"{n}:{sep.join(map(str, f['shape']))}" for n, f in fields),
        " ".join(f"{n}:{f['dtype']}" for n, f in fields),
    )


def _dask_client(address: str):
    """A Dask ``Client`` connected to the scheduler at ``address``; LardonStoreError when Dask is missing or the
    scheduler cannot be reached."""
    try:
        from distributed import Client
    except ImportError:
        raise LardonStoreError("--scheduler needs Dask: pip install 'lardon_store[dask]'.") from None
    try:
        return Client(address, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise LardonStoreError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}): start it (`dask scheduler`) "
            "or check the address, e.g. tcp://host:8786."
        ) from None


def _align_spec(text: str) -> tuple[str, tuple[int, int]]:
    """``FIELD=AXIS:RATE`` as ``(field, (axis, rate))``."""
    name, _, spec = text.partition("=")
    axis, _, rate = spec.partition(":")
    try:
        return name, (int(axis), int(rate))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FIELD=AXIS:RATE (e.g. audio=0:256: field audio, time on axis 0, 256 samples per step)"
        ) from None


def format_rows(rows: list[dict], fmt: str) -> str:
    """``ls`` output: an aligned table, a JSON list, or CSV with one column per metadata key. Entries with named
    fields show each field's shape and dtype as ``field:value``."""
    if fmt == "json":
        return "[\n" + ",\n".join(json.dumps(row) for row in rows) + ("\n]\n" if rows else "]\n")
    keys = sorted({k for row in rows for k in row["metadata"]})
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["key", "shape", "dtype", *keys])
        for row in rows:
            md = row["metadata"]
            cells = [md[k] if isinstance(md.get(k), str) else json.dumps(md[k]) if k in md else "" for k in keys]
            writer.writerow([row["key"], *_shape_dtype(row, "x"), *cells])
        return out.getvalue()
    table = [["key", "shape", "dtype", "metadata"]]
    for row in rows:
        shape, dtype = _shape_dtype(row, "x") if "fields" in row else (str(tuple(row["shape"])), row["dtype"])
        table.append([row["key"], shape, dtype, json.dumps(row["metadata"], sort_keys=True)])
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = ["  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip() for r in table]
    return "\n".join(lines) + f"\n({len(rows)} entries)\n"


@command("gc", "reclaim the bytes of entries no kept generation can reach, and crash leftovers")
def cmd_gc(args: argparse.Namespace) -> int:
    """Delete the entry rows that died before the oldest generation kept, copy the entries still reachable out of
    shards holding dead bytes, and unlink those shards. Keeps the current generation, the --keep-generations
    before it, and every generation that was current during the last --keep-seconds (default: a day).
    Python twin: lardon_store.open(path, readonly=False).gc(keep_seconds=..., keep_generations=...).

    Example:
        lardon-store gc store/
        lardon-store gc store/ --keep-seconds 0          # keep only the current generation
        lardon-store gc store/ --keep-seconds 604800 --keep-generations 10
    """
    freed = gc_store(args.store, keep_seconds=args.keep_seconds, keep_generations=args.keep_generations)
    print(f"{args.store}: {freed:,} bytes reclaimed")
    return 0


@command("show", "draw one entry to a PNG: a line, an image with a colour bar, or a grid of slices")
def cmd_show(args: argparse.Namespace) -> int:
    """Draw the entry KEY of STORE (1-D: a line; 2-D: an image, first axis up; more: its leading slices), titled
    with its key, shape, dtype and metadata; --field NAME draws one field of entries that have named fields.
    Needs matplotlib (pip install lardon_store[plot]).
    Python twin: lardon_store.open(path).show(key).savefig(out), or .field(name).show(key).

    Example:
        lardon-store show store/ violin/p62_00112 --out violin.png
        lardon-store show store/ p225_001 --field mel
    """
    store = open_store(args.store)
    if args.field is None and store.fields:
        raise FieldError(f"{args.store}: the entries have fields {', '.join(store.fields)}: pass --field NAME.")
    figure = (store.field(args.field) if args.field is not None else store).show(args.key)
    out = args.out or _png_name(args.key)
    figure.savefig(out)
    print(f"{out}: {args.key}")
    return 0


@command("plot", "draw how a metadata key is spread over a store or a query's entries, to a PNG")
def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the distribution of metadata KEY: a histogram for numbers, bars of counts for strings, with the number
    of entries that have no value. Needs matplotlib (pip install lardon_store[plot]).
    Python twin: lardon_store.open(path).where(query).plot(key).savefig(out).

    Example:
        lardon-store plot store/ pitch --where "instrument == 'violin'" --out pitch.png
    """
    store = open_store(args.store)
    selection = store.where(args.where) if args.where is not None else store.all()
    out = args.out or _png_name(f"{args.key}-distribution")
    selection.plot(args.key).savefig(out)
    print(f"{out}: {args.key} over {len(selection)} entries")
    return 0


def _png_name(text: str) -> str:
    """A file name in the current folder for a picture of ``text`` (a key may hold slashes)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) + ".png"


@command("history", "list a store's generations: when, what, entries added and removed")
def cmd_history(args: argparse.Namespace) -> int:
    """Print one line per generation (number, UTC time, operation, +added -removed).
    Python twin: lardon_store.open(path).history().

    Example:
        lardon-store history store/
    """
    for generation in open_store(args.store).history():
        print(generation)
    return 0


@command("verify", "check shard sizes and every entry's checksum; exit 1 if anything is damaged")
def cmd_verify(args: argparse.Namespace) -> int:
    """Check a store and name damaged entries and their sources. Python twin: lardon_store.open(path).verify().

    Example:
        lardon-store verify store/ && echo intact
    """
    report = verify_store(args.store)
    print(report)
    return 0 if report.ok else 1


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
        lardon-store demo lardon-demo
    """
    run_demo(args.dir, n_files=args.files)
    return 0


@command("import-lardon", "give a folder of the original lardon (parsing.ldn) a lardon_store catalog")
def cmd_import_lardon(args: argparse.Namespace) -> int:
    """Import DIR, made by the original lardon, reading its parsing.ldn with a restricted unpickler.

    The data files are referenced in place unless --copy packs them into shards.
    Python twin: lardon_store.import_lardon(dir, copy=False).

    Example:
        lardon-store import-lardon old_dataset/parsed
        lardon-store import-lardon old_dataset/parsed --copy
    """
    store = import_lardon(args.dir, copy=args.copy)
    mode = "copied into shards" if args.copy else "referenced in place"
    print(f"{store.root}: imported {len(store)} entries ({mode})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a wrong argument said in one line (and where to look) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="lardon-store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help=COMMANDS["compile"][0], description=cmd_compile.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--callback", help="module:function returning (array, metadata); default loads .npy")
    p.add_argument("--ext", action="append", help="a file extension to compile (repeatable), e.g. --ext .npy")
    p.add_argument("--force", action="store_true", help="recompile every source")
    p.add_argument("--callback-version", help="recompile every source when this differs from the last compile's")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="skip: record a failing source in the catalog and go on")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=0, help="run the callback in N processes (default 0: in this one)")
    p.add_argument("--catalog", metavar="URL",
                   help="a PostgreSQL URL for a new store's catalog (default: catalog.sqlite in DST)")  # fmt: skip
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the callbacks on the Dask cluster of this scheduler, e.g. tcp://host:8786")  # fmt: skip
    p.add_argument(
        "--align",
        action="append",
        type=_align_spec,
        metavar="FIELD=AXIS:RATE",
        help="a field's time axis and samples per step (repeatable), e.g. --align audio=0:256",
    )
    p.add_argument("--align-tolerance", type=int, metavar="STEPS",
                   help="refuse entries whose aligned fields differ by more steps (default: the recorded tolerance, "
                        f"else {DEFAULT_TOLERANCE})")  # fmt: skip
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out sources whose path matches (repeatable), e.g. --exclude '*.tmp'")  # fmt: skip
    for name in ("info", "migrate", "gc", "verify", "history"):
        p = sub.add_parser(name, help=COMMANDS[name][0], description=COMMANDS[name][1].__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.add_argument("store")
        if name == "info":
            p.add_argument("--json", action="store_true", help="print JSON")
        if name == "gc":
            p.add_argument("--keep-seconds", type=float, default=DEFAULT_KEEP_SECONDS,
                           help="keep every generation current during the last N seconds (default 86400)")  # fmt: skip
            p.add_argument("--keep-generations", type=int, default=0,
                           help="also keep the N generations before the current one (default 0)")  # fmt: skip
    p = sub.add_parser("ls", help=COMMANDS["ls"][0], description=cmd_ls.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("store")
    p.add_argument("--where", help="a metadata query, e.g. \"pitch > 60 and split == 'train'\"")
    p.add_argument("--limit", type=int, help="list at most N entries")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p = sub.add_parser("show", help=COMMANDS["show"][0], description=cmd_show.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("store")
    p.add_argument("key", help="the entry's key")
    p.add_argument("--out", help="the PNG to write (default: <key>.png here)")
    p.add_argument("--field", help="the field to draw, for entries with named fields")
    p = sub.add_parser("plot", help=COMMANDS["plot"][0], description=cmd_plot.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("store")
    p.add_argument("key", help="the metadata key")
    p.add_argument("--where", help="a metadata query choosing the entries (default: every entry)")
    p.add_argument("--out", help="the PNG to write (default: <key>-distribution.png here)")
    p = sub.add_parser("demo", help=COMMANDS["demo"][0], description=cmd_demo.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("dir", nargs="?", default="lardon-demo", help="folder to build in (default ./lardon-demo)")
    p.add_argument("--files", type=int, default=200, help="number of synthetic source files")
    p = sub.add_parser("import-lardon", help=COMMANDS["import-lardon"][0], description=cmd_import_lardon.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("dir", help="the folder holding parsing.ldn")
    p.add_argument("--copy", action="store_true", help="pack the data into shards instead of referencing the files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lardon-store``."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except UsageError as exc:
        print(f"lardon-store {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (LardonStoreError, OSError, ValueError, ImportError) as exc:
        print(f"lardon-store {args.command}: error: {_for_the_cli(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lardon-store {args.command}: interrupted; what was committed is kept.", file=sys.stderr)
        return 130


def _for_the_cli(message: str) -> str:
    """A library message with its Python advice given as the command-line option that does the same."""
    return message.replace("pass on_error='skip'", "use --on-error skip").replace("on_error='skip'", "--on-error skip")


if __name__ == "__main__":
    sys.exit(main())
