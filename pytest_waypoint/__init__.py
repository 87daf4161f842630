"""The pytest plugin and chaos harness for Waypoint workflows.

Importing this package imports no database driver and starts nothing; the
plugin module is loaded by pytest through the ``pytest11`` entry point.
"""

from pytest_waypoint.schedule import CrashPoint, Schedule, parse_point, parse_schedule

__all__ = ["CrashPoint", "Schedule", "parse_point", "parse_schedule"]
