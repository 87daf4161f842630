"""Journal backends behind one contract, and the URL that picks one.

``memory://``                     ``MemoryStore``, for tests and fuzzing
``sqlite:///relative/path.db``    ``SQLiteStore``, the embedded default
``sqlite:////absolute/path.db``
``postgresql://user@host/db``     ``PostgresStore`` (the ``postgres`` extra)

With no URL, ``WAYPOINT_DSN`` is used when set, else ``sqlite:///waypoint.db``
in the working directory.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from waypoint.errors import ConfigurationError

if TYPE_CHECKING:
    from waypoint.stores.base import Store

__all__ = ["DEFAULT_DSN", "open_store", "redact"]

DEFAULT_DSN = "sqlite:///waypoint.db"

_SCHEMES = ("memory://", "sqlite://", "postgresql://", "postgres://")


def redact(dsn: str) -> str:
    """The URL with its password replaced, for logs and reports."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return dsn
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def open_store(dsn: str | None = None) -> Store:
    """A store for ``dsn`` (not yet opened: the runtime opens it)."""
    if dsn is None:
        dsn = os.environ.get("WAYPOINT_DSN") or DEFAULT_DSN
    if not isinstance(dsn, str):
        raise ConfigurationError(
            f"a store must be a Store or a URL string, not {type(dsn).__name__}"
        )
    if dsn.startswith("memory://"):
        from waypoint.stores.memory import MemoryStore

        return MemoryStore()
    if dsn.startswith("sqlite://"):
        from waypoint.stores.sqlite import SQLiteStore

        return SQLiteStore.from_dsn(dsn)
    if dsn.startswith(("postgresql://", "postgres://")):
        from waypoint.stores.postgres import PostgresStore

        return PostgresStore(dsn)
    raise ConfigurationError(
        f"unknown store URL {redact(dsn)!r}: it must start with one of "
        f"{', '.join(_SCHEMES)}"
    )
