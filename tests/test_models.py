"""Answers: results and statuses are plain values."""

from __future__ import annotations

from runcomfy_async import JobResult

# -- results ----------------------------------------------------------------------------


def test_job_result_video_url_is_the_first():
    """``video_url`` is the first video, or None without one."""
    assert ("https://a.test/1.mp4", None) == (
        JobResult(
            request_id="r", video_urls=("https://a.test/1.mp4", "https://a.test/2.mp4")
        ).video_url,
        JobResult(request_id="r").video_url,
    )
