"""``monitor`` (context manager) and ``monitored`` (decorator): time a job and report it."""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import sys
import time
from types import TracebackType
from typing import Any, Callable, Literal, Optional, Type, TypeVar, Union, cast, overload

from ._api import get_client
from ._client import Client, RunwardenError
from ._report import ExecutionOutcome, ExecutionReport, create_report, utcnow

log = logging.getLogger("runwarden")

_current: "contextvars.ContextVar[Optional[ExecutionReport]]" = contextvars.ContextVar(
    "runwarden_current_report", default=None
)

#: The server accepts cpu_percent_avg up to 10000 (100 cores busy).
_MAX_CPU_PERCENT = 10000.0


def current_report() -> Optional[ExecutionReport]:
    """The report of the innermost ``monitor``/``monitored`` block running in this context, so
    that a decorated job can fill in its data_verification."""
    return _current.get()


def peak_memory_mb() -> Optional[float]:
    """The process's peak resident set size in MB (``ru_maxrss``), or None where unavailable."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there, KiB on Linux and the BSDs
        return maxrss / (1024.0 * 1024.0)
    return maxrss / 1024.0


def _exception_text(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


class monitor:
    """``with runwarden.monitor("worker_name") as report:`` times the block and submits a report
    when it ends: outcome SUCCESS (unless the block set another), or FAILED with the exception's
    text as error_message (the exception propagates); ``duration_ms``, ``completed_at``,
    ``resource_metrics.memory_peak_mb`` (process peak RSS) and ``cpu_percent_avg`` (process CPU
    time over wall time, all threads) are filled in unless the block set them. Reporting never
    raises out of the block unless the client has ``raise_errors=True`` (and then only when the
    block itself succeeded)."""

    def __init__(self, worker_name: str, worker_type: str = "", *, client: Optional[Client] = None) -> None:
        self.worker_name = worker_name
        self.worker_type = worker_type
        self.client = client
        self.report: Optional[ExecutionReport] = None
        self.result: Any = None
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._token: Optional[contextvars.Token[Optional[ExecutionReport]]] = None

    def __enter__(self) -> ExecutionReport:
        self.report = create_report(self.worker_name, self.worker_type)
        self._token = _current.set(self.report)
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self.report

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]:
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        report = self.report
        if report is None:  # pragma: no cover - __exit__ without __enter__
            return False
        failed = exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        try:
            if report.completed_at is None:
                report.completed_at = utcnow()
            if report.duration_ms is None:
                report.duration_ms = int(round(wall * 1000))
            if failed:
                assert exc is not None
                report.outcome = ExecutionOutcome.FAILED
                report.error_message = _exception_text(exc)
            elif report.outcome is None:
                report.outcome = ExecutionOutcome.SUCCESS
            metrics = report.resource_metrics
            if getattr(metrics, "memory_peak_mb", 0) is None:
                metrics.memory_peak_mb = peak_memory_mb()
            if getattr(metrics, "cpu_percent_avg", 0) is None and wall > 0:
                metrics.cpu_percent_avg = min(_MAX_CPU_PERCENT, max(0.0, cpu / wall * 100.0))
            client = self.client if self.client is not None else get_client()
            self.result = client.submit(report)
        except RunwardenError:
            if not failed:
                raise  # raise_errors=True and the job itself succeeded
            log.exception("runwarden: could not report the failed run of %r", self.worker_name)
        except Exception:  # noqa: BLE001 - reporting never breaks the worker
            log.exception("runwarden: could not report the run of %r", self.worker_name)
        return False


F = TypeVar("F", bound=Callable[..., Any])


@overload
def monitored(worker_name: F) -> F: ...


@overload
def monitored(
    worker_name: Optional[str] = None, worker_type: str = "", *, client: Optional[Client] = None
) -> Callable[[F], F]: ...


def monitored(
    worker_name: Union[str, Callable[..., Any], None] = None,
    worker_type: str = "",
    *,
    client: Optional[Client] = None,
) -> Any:
    """``@runwarden.monitored("worker_name")`` runs each call of the function (sync or async)
    inside :class:`monitor`; ``@runwarden.monitored`` alone uses the function's name. The
    function's return value and exceptions pass through unchanged; inside it,
    :func:`current_report` returns the run's report."""
    if callable(worker_name):
        return monitored(None, worker_type, client=client)(worker_name)

    def decorate(func: F) -> F:
        name = worker_name or func.__name__
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with monitor(name, worker_type, client=client):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with monitor(name, worker_type, client=client):
                return func(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
