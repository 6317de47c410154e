import anyio, pytest
from runcomfy_async._clock import VirtualClock, sleep, cancel_after


async def test_autojump():
    clock = VirtualClock()
    async with clock.autojumping():
        await sleep(clock, 3600)
        assert clock.now() == 3600
        with cancel_after(clock, 5) as scope:
            await sleep(clock, 100)
        assert scope.cancelled_caught
        assert clock.now() == 3605
