"""``waypoint chaos ...``. (stub: in progress)"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("chaos", help="crash-test a workflow at every step")
