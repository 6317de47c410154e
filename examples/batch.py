"""Run a small batch with one deadline, printing each job as it finishes.

Run it like ``first_job.py`` (a token, or the emulator's base URL and token
in the environment)::

    python examples/batch.py
"""

from __future__ import annotations

import asyncio
import sys

from runcomfy_async import ImageToVideo, Limits, RunComfy

PROMPTS = [
    "waves roll onto a black sand beach, drone shot at golden hour",
    "a cat stretches on a sunny windowsill, then looks at the camera",
    "leaves swirl around a lamp post in an autumn wind",
    "steam rises from a cup of coffee on a wooden table, macro shot",
    "city lights flicker on as dusk falls, time-lapse",
]
IMAGE = "https://example.com/start-frame.png"
DEADLINE = 30 * 60  # seconds for the whole batch


async def main() -> int:
    requests = [ImageToVideo(prompt=prompt, image_url=IMAGE) for prompt in PROMPTS]
    failed = 0
    async with RunComfy(limits=Limits(max_jobs_in_flight=3)) as client:
        jobs = client.submit_many(requests, timeout=DEADLINE)
        async for job in client.as_completed(jobs):
            number = jobs.index(job)
            error = job.exception()
            if error is None:
                print(f"#{number} done: {job.result().video_url}")
            else:
                failed += 1
                print(f"#{number} {type(error).__name__}: {error}")
        stats = client.stats
    print(f"{len(jobs) - failed} of {len(jobs)} succeeded; {stats.total_requests} requests")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
