"""Alembic environment of lardon_store.

lardon_store hands its open connection over through ``config.attributes["connection"]``; a developer's ``alembic``
command line gives a URL instead: ``alembic -x url=sqlite:///dev.db revision --autogenerate -m "..."``.
Logging is not configured here: a library must not reconfigure its host's logging.
"""

from alembic import context
from sqlalchemy import create_engine

from lardon_store.catalog.schema import metadata

config = context.config


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the catalog's URL: alembic -x url=sqlite:///path/catalog.sqlite ...")
    with create_engine(url).begin() as conn:
        run(conn)
