"""Moved to :mod:`._admission`; this name stays until every import has moved."""

from ._admission import AIMDController, Throttle, Ticket, TokenBucket

__all__ = ["AIMDController", "Throttle", "Ticket", "TokenBucket"]
