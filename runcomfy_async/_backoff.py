"""Moved to :mod:`runcomfy_async._retry`; kept while callers move over."""

from ._retry import backoff_delay, parse_retry_after, retry_delay

__all__ = ["backoff_delay", "parse_retry_after", "retry_delay"]
