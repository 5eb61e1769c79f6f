"""standin.duetimer.DueTimer on a real asyncio loop: order, never early, cancel, re-arming from a callback."""
from __future__ import annotations

import asyncio
import sys
import time

import pytest

from standin.duetimer import DueTimer


def run(scenario):
    async def main():
        t = DueTimer(asyncio.get_running_loop())
        try:
            return await scenario(t)
        finally:
            t.close()
    return asyncio.run(main())


@pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux-only (elsewhere: loop.call_at)")
def test_is_precise_on_linux():
    assert run(lambda t: asyncio.sleep(0, t.precise))


def test_calls_run_in_due_order_never_early_and_cancelled_ones_not_at_all():
    async def scenario(t):
        ran = []
        now = time.monotonic()
        for label, d in (("c", 0.06), ("a", 0.02), ("x", 0.03), ("b", 0.04)):
            h = t.call_at(now + d, lambda label=label, due=now + d: ran.append((label, time.monotonic() - due)))
            if label == "x":
                h.cancel()
        await asyncio.sleep(0.25)
        return ran
    ran = run(scenario)
    assert [label for label, _ in ran] == ["a", "b", "c"]
    assert all(early >= -25e-6 for _, early in ran), ran  # within the 20 us grouping, never before


def test_a_call_scheduled_from_a_callback_does_not_delay_an_earlier_pending_one():
    async def scenario(t):
        ran = {}
        now = time.monotonic()
        # a's callback schedules c far ahead; b, already pending, must still fire at its own time
        t.call_at(now + 0.01, lambda: (ran.setdefault("a", time.monotonic() - now),
                                       t.call_at(now + 0.8, lambda: ran.setdefault("c", time.monotonic() - now))))
        t.call_at(now + 0.05, lambda: ran.setdefault("b", time.monotonic() - now))
        await asyncio.sleep(0.9)
        return ran
    ran = run(scenario)
    assert set(ran) == {"a", "b", "c"}
    assert ran["b"] < 0.5 < ran["c"], ran
