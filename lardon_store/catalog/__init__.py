"""The catalog: its tables, its engine, its Alembic migrations, its reads and its writer.

Every SQL statement of lardon_store is in this package; the layers above see functions and ``Columns``.
"""
