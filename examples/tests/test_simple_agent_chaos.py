"""The plugin's fixtures on the simple agent: the five-line version first.

    async def test_order_flow_survives_every_crash(chaos):
        report = await chaos.explore(order_flow, "A-17")
        assert report.ok

``chaos.explore`` runs the workflow once, then crashes it at every step and
phase, resumes it in a fresh runtime each time and checks the six invariants
of DESIGN.md; on a violation the test fails with the crash matrix.
"""

from __future__ import annotations

import pytest

from examples.simple_agent import order_flow
from waypoint import EventKind


async def test_order_flow_survives_every_crash(chaos):
    report = await chaos.explore(order_flow, "A-17")
    assert report.ok


async def test_the_report_is_a_matrix_of_every_crash(chaos):
    report = await chaos.explore(order_flow, "A-17")

    # 3 steps x 3 phases, and once before the execution is marked complete.
    assert len(report.scenarios) == 10
    assert "fetch_order#1" in report.matrix()
    assert report.reruns == 3  # a crash after a body re-runs that body once


@pytest.mark.waypoint_crash("price#1@after_effect")
async def test_a_run_under_a_crash_returns_what_an_uncrashed_run_returns(waypoint):
    # The waypoint fixture crashes the run after price's body, then resumes
    # it in a fresh runtime; run() returns the recorded output.
    output = await waypoint.run(order_flow, "A-17", execution_id="order-1")

    assert output == "order A-17: 2.30 EUR, confirmed"
    history = await waypoint.history("order-1")
    assert [e.step for e in history if e.kind is EventKind.STEP_COMPLETED] == [
        "fetch_order",
        "price",
        "confirm",
    ]
