"""What the HTTP services share: a readiness check that asks something remote."""

import asyncio
import time

from services.web import RemoteCheck


async def test_a_remote_check_that_does_not_answer_in_time_is_a_no() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    started = time.monotonic()
    assert not await RemoteCheck(hangs, timeout=0.2, every=0)()
    assert time.monotonic() - started < 2


async def test_a_remote_check_is_asked_at_most_once_per_period() -> None:
    now, answers, asked = [0.0], [True, False], []

    async def check() -> bool:
        asked.append(now[0])
        return answers[len(asked) - 1]

    ready = RemoteCheck(check, timeout=1, every=2, clock=lambda: now[0])
    together = await asyncio.gather(ready(), ready(), ready())
    assert together == [True, True, True]
    now[0] = 1.9
    assert await ready()  # the last answer, not asked again
    now[0] = 2.0
    assert not await ready()
    assert asked == [0.0, 2.0]
