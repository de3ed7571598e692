"""Module-level functions (the Python-era API) on a lazily created default client."""

from __future__ import annotations

import threading
from typing import Any, Optional

from ._client import Client, SubmitResult
from ._report import ExecutionReport

_default_client: Optional[Client] = None
_default_lock = threading.Lock()


def get_client() -> Client:
    """The default client, created on first use from ``$RUNWARDEN_ADDR`` and ``$RUNWARDEN_TOKEN``."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client()
        return _default_client


def configure(**kwargs: Any) -> Client:
    """Replaces the default client with ``Client(**kwargs)`` (the previous one is flushed and
    closed) and returns it, e.g. ``runwarden.configure(background=True)``."""
    global _default_client
    new = Client(**kwargs)
    with _default_lock:
        old, _default_client = _default_client, new
    if old is not None:
        old.close()
    return new


def reset_default_client() -> None:
    """Closes the default client; the next call creates a new one from the environment."""
    global _default_client
    with _default_lock:
        old, _default_client = _default_client, None
    if old is not None:
        old.close()


def submit_execution_report(report: ExecutionReport) -> Optional[SubmitResult]:
    """Sends ``report`` with the default client; ``None`` when it was not stored (logged) or was
    queued for background sending."""
    return get_client().submit(report)


def quick_report(
    worker_name: str,
    success: bool = True,
    duration_ms: Optional[int] = None,
    records_processed: int = 0,
    records_fetched: int = 0,
    **more: Any,
) -> Optional[SubmitResult]:
    """Reports a finished run in one call: outcome SUCCESS (or FAILED when ``success`` is false),
    ``completed_at`` now, ``started_at`` ``duration_ms`` earlier. ``more`` takes any
    data_verification / resource_metrics / dependency_metrics field by name, plus
    ``error_message``, ``outcome``, ``worker_type`` and ``custom_metrics``; other keywords are
    recorded in custom_metrics."""
    return get_client().quick_report(
        worker_name,
        success=success,
        duration_ms=duration_ms,
        records_processed=records_processed,
        records_fetched=records_fetched,
        **more,
    )


def flush(timeout: Optional[float] = None) -> bool:
    """Waits for the default client's background queue (True at once when there is none)."""
    with _default_lock:
        client = _default_client
    return True if client is None else client.flush(timeout)
