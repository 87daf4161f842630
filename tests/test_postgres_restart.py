"""The PostgreSQL server restarting under a running workflow.

Restarting the shared server would break every other test running at the
same moment, so this test starts a private, throwaway cluster of its own
(initdb into a temporary directory, on a free port) and restarts that one.
It needs the PostgreSQL server binaries on this machine, and is skipped,
saying so, where they are missing.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from waypoint import ExecutionStatus, Waypoint, checkpoint, workflow
from waypoint.hooks import CrashSite, armed

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(*command: str) -> list[str]:
    # The server refuses to run as root; CI and this machine run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


class PrivateCluster:
    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.data = root / "data"
        self.log = root / "server.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._options = (
            f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        )

    def _ctl(self, *args: str) -> None:
        # -l sends the server's output to a file: a server holding our pipe
        # open would keep subprocess.run waiting for ever.
        command = [
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
        ]
        subprocess.run(
            _as_postgres(*command, *args),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def init(self) -> None:
        subprocess.run(
            _as_postgres(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._ctl("-o", self._options, "-w", "start")

    def restart(self) -> None:
        self._ctl("-o", self._options, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    bindir = _bindir()
    if bindir is None or (shutil.which("runuser") is None and os.geteuid() == 0):
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="wp-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivateCluster(bindir, root)
    try:
        server.init()
        server.start()
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a private PostgreSQL cluster: {exc}")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


ran: list[str] = []


@checkpoint
async def stage(n: int) -> int:
    ran.append(f"stage {n}")
    return n * n


@workflow(name="restart_survivor")
async def three_stages() -> int:
    return sum([await stage(n) for n in (1, 2, 3)])


async def test_a_server_restart_between_steps_is_survived(
    cluster: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    from waypoint.stores.postgres import PostgresStore

    ran.clear()
    restarts: list[str] = []

    def restart_once(site: CrashSite) -> None:
        if site.point == "stage#1@after_commit" and not restarts:
            cluster.restart()  # every pooled connection dies here
            restarts.append(site.point)

    store = PostgresStore(cluster.dsn, migrate=True, min_size=1, max_size=2)
    caplog.set_level(logging.WARNING, logger="waypoint.stores.postgres")
    async with Waypoint(store) as wp:
        with armed(restart_once):
            out = await wp.run(three_stages, execution_id="survivor")
        execution = await wp.execution("survivor")
    await store.close()

    assert restarts == ["stage#1@after_commit"]
    assert out == 1 + 4 + 9
    assert ran == ["stage 1", "stage 2", "stage 3"]
    assert execution.status is ExecutionStatus.COMPLETED
    assert "retry 1 of" in caplog.text
