"""``waypoint db ...``: the journal schema, through Alembic. (stub: in progress)"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("db", help="manage the journal schema")
