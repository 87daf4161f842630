"""The schema version, and Alembic driven from code.

``migrations/`` is the one source of the SQL schema for both SQL backends.
Opening a store compares the database's revision with ``SCHEMA_REVISION``
through the driver alone; Alembic (and SQLAlchemy) are imported only when a
migration actually has to run.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from waypoint.errors import SchemaVersionError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "KNOWN_REVISIONS",
    "SCHEMA_REVISION",
    "alembic_config",
    "check_revision",
    "migrations_path",
]

logger = logging.getLogger(__name__)

#: Every revision in ``migrations/versions``, oldest first; the last is the
#: one this code reads and writes. A test holds this to Alembic's own view.
KNOWN_REVISIONS = ("0001", "0002")
SCHEMA_REVISION = KNOWN_REVISIONS[-1]


def migrations_path() -> str:
    return str(resources.files("waypoint._migrations"))


def alembic_config(
    url: str | None = None, *, connection: Any = None, schema: str | None = None
) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", migrations_path())
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    if schema is not None:
        config.attributes["schema"] = schema
    return config


def check_revision(found: str | None, where: str, command: str) -> bool:
    """Whether the database at ``where`` needs an upgrade to be usable.

    Returns False when it is current, True when it is empty or older, and
    raises ``SchemaVersionError`` for a revision this code does not know (a
    newer Waypoint wrote it).
    """
    if found == SCHEMA_REVISION:
        return False
    if found is None or found in KNOWN_REVISIONS:
        return True
    raise SchemaVersionError(
        f"the journal at {where} has schema revision {found!r}, which this "
        f"version of Waypoint (revision {SCHEMA_REVISION}) does not know; a "
        "newer Waypoint wrote it. Upgrade waypoint-sdk, or if you downgraded "
        f"on purpose, run: {command}",
        found=found,
        expected=SCHEMA_REVISION,
    )
