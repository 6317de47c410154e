"""Submit one image-to-video job and print its video URL.

Against the real API::

    export RUNCOMFY_API_TOKEN=...
    python examples/first_job.py https://example.com/your-image.png

Against the emulator (nothing billed), in two terminals::

    runcomfy-async emulator --port 8765 --time-scale 0.01
    RUNCOMFY_API_TOKEN=test-token RUNCOMFY_MODEL_API_BASE_URL=http://127.0.0.1:8765 \
        python examples/first_job.py
"""

from __future__ import annotations

import asyncio
import sys

from runcomfy_async import ImageToVideo, RunComfy, RunComfyError


async def main(image: str) -> int:
    if image.startswith(("http://", "https://", "data:")):
        request = ImageToVideo(
            prompt="a paper boat drifts down a rain-soaked street", image_url=image
        )
    else:  # a local JPEG or PNG, checked and sent inline
        request = ImageToVideo.from_file(
            image, prompt="a paper boat drifts down a rain-soaked street"
        )
    async with RunComfy() as client:
        job = client.submit(request, timeout=20 * 60)
        try:
            result = await job
        except RunComfyError as error:
            print(f"job {job.request_id} failed: {error}", file=sys.stderr)
            return 1
    print(f"request {job.request_id}: {result.video_url} (cost: {result.cost} USD)")
    return 0


if __name__ == "__main__":
    image = sys.argv[1] if len(sys.argv) > 1 else "https://example.com/boat.png"
    sys.exit(asyncio.run(main(image)))
