"""Where a durability test keeps its ledger (the ``ledger`` fixture: SQLite, Postgres)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cohort.durable import Store

__all__ = ["Ledger"]


class Ledger:
    """Where a durability test keeps its ledger: ``target`` is what ``store=`` takes
    (a SQLite path or a postgresql:// URL); ``open()`` a store on it to inspect."""

    def __init__(self, kind: str, target: Any) -> None:
        self.kind = kind
        self.target = target

    @classmethod
    def of(cls, target: str) -> Ledger:
        """The ledger a program is given on its command line: a postgresql:// URL or a
        SQLite path."""
        postgres = target.startswith(("postgresql://", "postgres://"))
        return cls("postgres" if postgres else "sqlite", target)

    @property
    def wait(self) -> float:
        """Seconds a restarted program waits for the run's previous owner to go: on
        Postgres a SIGKILLed owner's session ends when the server sees its socket
        closed, which can come after the restart; on SQLite the kernel releases the
        lock with the process."""
        return 30.0 if self.kind == "postgres" else 0.0

    def open(self) -> Store:
        import cohort.durable as durable

        if self.kind == "sqlite":
            return durable.SQLiteStore(self.target)
        return durable.PostgresStore(self.target)

    def table(self, name: str) -> str:
        """The name of one of the ledger's tables (``runs``, ``steps``, ``decisions``)."""
        return name if self.kind == "sqlite" else f"cohort_{name}"

    def sql(self, statement: str) -> str:
        """A statement written with ``?`` placeholders, in this database's style."""
        return statement if self.kind == "sqlite" else statement.replace("?", "%s")

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement (committed) on the ledger's database; its rows, if any."""
        if self.kind == "sqlite":
            import sqlite3

            db = sqlite3.connect(self.target)
            try:
                with db:
                    return db.execute(statement).fetchall()
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []
