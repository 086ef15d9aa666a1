"""Alembic wiring: find the shipped migrations, upgrade a writable catalog, refuse what this version cannot read.

The revisions live in the top-level ``migrations/`` of the source tree; the wheel carries them as
``lardon_store/migrations``. The Alembic ``Config`` is built in code, and the open connection is handed to
``migrations/env.py`` through ``config.attributes`` (no URL goes through ConfigParser).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from ..errors import IncompatibleSchemaError, LardonStoreError, SchemaOutdatedError

__all__ = [
    "alembic_config",
    "check_revision",
    "current_revision",
    "head_revision",
    "known_revisions",
    "migrations_dir",
    "upgrade",
]

_ALEMBIC_LOCK = threading.Lock()


def migrations_dir() -> Path:
    """The folder holding ``env.py`` and ``versions/``: inside the package (wheel) or beside it (checkout)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise LardonStoreError(
        f"lardon_store's migrations were not found in {package / 'migrations'} nor {package.parent / 'migrations'}: "
        "reinstall lardon_store (pip install --force-reinstall lardon_store)."
    )


def alembic_config(location: str | None = None) -> Config:
    """An Alembic Config pointing at the migrations in ``location`` (by default the shipped ones)."""
    config = Config()
    config.set_main_option("script_location", location or str(migrations_dir()))
    return config


@functools.cache
def _revisions(location: str) -> tuple[str, frozenset[str]]:
    """(head, every revision) of the migrations at ``location``: read once per process, they ship with the code."""
    script = ScriptDirectory.from_config(alembic_config(location))
    head = script.get_current_head()
    assert head is not None
    return head, frozenset(rev.revision for rev in script.walk_revisions())


def head_revision() -> str:
    """The newest revision this version of lardon_store knows."""
    return _revisions(str(migrations_dir()))[0]


def known_revisions() -> frozenset[str]:
    """Every revision this version of lardon_store knows."""
    return _revisions(str(migrations_dir()))[1]


def current_revision(conn: Connection) -> str | None:
    """The revision a catalog is stamped with (None for an empty database)."""
    return MigrationContext.configure(conn).get_current_revision()


def check_revision(conn: Connection, where: str, readonly: bool) -> str | None:
    """Raise unless a catalog at revision ``current`` can be used as asked; return that revision.

    A revision this version does not know means a newer lardon_store wrote it: refuse, touching nothing. An older one
    is fine for writing (it will be upgraded) but must be migrated first for reading.
    """
    current = current_revision(conn)
    head = head_revision()
    if current is not None and current not in known_revisions():
        raise IncompatibleSchemaError(
            f"{where}: catalog revision {current!r} is unknown to this lardon_store (newest known: {head!r}); "
            "it was written by a newer version: upgrade lardon_store (pip install -U lardon_store). "
            "The catalog was not modified."
        )
    if readonly and current != head:
        raise SchemaOutdatedError(
            f"{where}: catalog revision {current!r} is older than {head!r}: run `lardon-store migrate {where}` "
            "(or lardon_store.migrate_store(path)) once, then open it again."
        )
    return current


def upgrade(engine: Engine) -> None:
    """Bring the catalog behind ``engine`` to the head revision, in one transaction."""
    with _ALEMBIC_LOCK, engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
