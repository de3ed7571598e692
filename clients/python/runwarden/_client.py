"""The gRPC client: bounded timeouts, retries with the same execution_id, optional background sender."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc

from ._pb import analysis_pb2, report_service_pb2, report_service_pb2_grpc, status_pb2
from ._report import (
    DATA_VERIFICATION_FIELDS,
    DEPENDENCY_METRICS_FIELDS,
    RESOURCE_METRICS_FIELDS,
    ConversionError,
    ExecutionOutcome,
    ExecutionReport,
    to_proto,
    utcnow,
)

log = logging.getLogger("runwarden")

DEFAULT_ADDR = "127.0.0.1:50051"
ENV_ADDR = "RUNWARDEN_ADDR"
ENV_TOKEN = "RUNWARDEN_TOKEN"

#: Codes after which the same request is sent again (same execution_id, so never double-counted).
RETRIABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)

_BAD_REQUEST_TYPE = "google.rpc.BadRequest"
_SCORE_NAMES = ("reliability", "performance", "data_quality", "resource_efficiency")


@dataclass(frozen=True)
class FieldViolation:
    """One broken rule of a rejected report, as the server names it."""

    field: str
    description: str

    def __str__(self) -> str:
        return "{}: {}".format(self.field, self.description) if self.field else self.description


class RunwardenError(Exception):
    """A report was not stored (raised only by clients created with ``raise_errors=True``)."""

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        execution_id: str = "",
        worker_name: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.execution_id = execution_id
        self.worker_name = worker_name


class InvalidReportError(RunwardenError):
    """The report breaks the contract (INVALID_ARGUMENT, or a value the client cannot encode).
    Not retried: sending it again would fail the same way."""

    def __init__(self, message: str, violations: Sequence[FieldViolation], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.violations: List[FieldViolation] = list(violations)


@dataclass(frozen=True)
class SubmitResult:
    """The server's acknowledgement of a stored report."""

    execution_id: str
    #: True when this execution_id was already stored; the scores are those of the first report.
    duplicate: bool
    #: 0-100, the weighted sum of the four scores.
    overall_score: float
    #: "EXCELLENT", "GOOD", "DEGRADED", "POOR" or "FAILED".
    quality_level: str
    #: One line per deduction, by score: reliability, performance, data_quality, resource_efficiency.
    reasons: Dict[str, List[str]] = field(default_factory=dict)
    #: The four scores and ``overall``.
    scores: Dict[str, float] = field(default_factory=dict)

    @property
    def all_reasons(self) -> List[str]:
        """Every reason, in score order."""
        return [line for name in _SCORE_NAMES for line in self.reasons.get(name, [])]

    @classmethod
    def from_response(cls, response: report_service_pb2.SubmitReportResponse) -> "SubmitResult":
        level = analysis_pb2.QualityLevel.Name(response.quality_level)
        if level.startswith("QUALITY_LEVEL_"):
            level = level[len("QUALITY_LEVEL_") :]
        scores = {name: getattr(response.scores, name) for name in _SCORE_NAMES}
        scores["overall"] = response.scores.overall
        return cls(
            execution_id=response.execution_id,
            duplicate=response.duplicate,
            overall_score=response.scores.overall,
            quality_level=level,
            reasons={name: list(getattr(response.reasons, name)) for name in _SCORE_NAMES},
            scores=scores,
        )


def field_violations(error: grpc.RpcError) -> List[FieldViolation]:
    """The google.rpc.BadRequest field violations carried by a gRPC error, if any."""
    call: Any = error  # a grpc.Call too when raised by a call
    try:
        trailers = call.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - an error without a call (e.g. a test double)
        return []
    violations: List[FieldViolation] = []
    for key, value in trailers:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # noqa: BLE001 - malformed details: fall back to the message
            return []
        for detail in status.details:
            if detail.type_url.rsplit("/", 1)[-1] != _BAD_REQUEST_TYPE:
                continue
            bad = status_pb2.BadRequest()
            try:
                bad.ParseFromString(detail.value)
            except Exception:  # noqa: BLE001
                continue
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return violations


def _error_code(error: grpc.RpcError) -> Optional[grpc.StatusCode]:
    call: Any = error
    try:
        code: grpc.StatusCode = call.code()
        return code
    except Exception:  # noqa: BLE001
        return None


def _error_details(error: grpc.RpcError) -> str:
    call: Any = error
    try:
        return str(call.details() or "")
    except Exception:  # noqa: BLE001
        return str(error)


def _too_large(code: Optional[grpc.StatusCode], details: str) -> bool:
    """RESOURCE_EXHAUSTED for an oversized message is permanent, unlike a full queue."""
    lowered = details.lower()
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and ("too large" in lowered or "larger than" in lowered)


_STOP = object()

# Reconnect quickly after a refused connection, so that a retry a few hundred ms later really
# reaches a server that has just come back (gRPC's default first backoff is 1 s, growing to 120 s).
# grpc.min_reconnect_backoff_ms is deliberately left alone: gRPC also uses it as the minimum
# connect timeout (20 s), and lowering it would fail slow (e.g. TLS over a WAN) handshakes.
_CHANNEL_OPTIONS: Tuple[Tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class Client:
    """Sends execution reports to runwarden.

    ``addr`` defaults to ``$RUNWARDEN_ADDR`` or ``127.0.0.1:50051`` (``https://host:port`` for
    TLS); ``token`` to ``$RUNWARDEN_TOKEN`` (sent as ``authorization: Bearer <token>``).
    Each attempt is bounded by ``timeout`` seconds; UNAVAILABLE, RESOURCE_EXHAUSTED and
    DEADLINE_EXCEEDED are retried up to ``retries`` times with exponential backoff and jitter
    (``backoff_base`` doubling up to ``backoff_max`` seconds), always with the same
    execution_id. Failures are logged on the ``runwarden`` logger and the call returns ``None``,
    unless ``raise_errors`` is true. With ``background=True`` reports are queued (at most
    ``queue_size``; more are dropped and logged) and sent by a daemon thread; ``flush()`` waits for
    them and runs at interpreter exit for up to ``exit_flush_timeout`` seconds.
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 5.0,
        retries: int = 3,
        raise_errors: bool = False,
        background: bool = False,
        queue_size: int = 1000,
        *,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        exit_flush_timeout: float = 10.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.addr: str = addr or os.environ.get(ENV_ADDR) or DEFAULT_ADDR
        if token is None:
            token = os.environ.get(ENV_TOKEN) or None
        self._token = token
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.raise_errors = bool(raise_errors)
        self.background = bool(background)
        self.queue_size = int(queue_size)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.exit_flush_timeout = float(exit_flush_timeout)

        self._lock = threading.Lock()
        self._channel: Optional[grpc.Channel] = None
        self._stub: Optional[report_service_pb2_grpc.ReportServiceStub] = None
        self._metadata: Tuple[Tuple[str, str], ...] = (("authorization", "Bearer " + token),) if token else ()
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=self.queue_size)
        self._pending = 0
        self._pending_cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._atexit_registered = False

    def __repr__(self) -> str:
        return "Client(addr={!r}, background={})".format(self.addr, self.background)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- public API -------------------------------------------------------------------------

    def submit(self, report: ExecutionReport) -> Optional[SubmitResult]:
        """Sends ``report``. Returns the server's result, or ``None`` when the report could not
        be stored (logged) or was queued for the background sender."""
        try:
            request = report_service_pb2.SubmitReportRequest(report=to_proto(report))
        except ConversionError as exc:
            name = getattr(report, "worker_name", "?")
            violation = FieldViolation(exc.field, exc.description)
            log.error("runwarden: report for worker %r not sent: invalid %s", name, violation)
            if self.raise_errors:
                raise InvalidReportError(
                    "invalid report: {}".format(violation),
                    [violation],
                    execution_id=str(getattr(report, "execution_id", "") or ""),
                    worker_name=str(name),
                ) from exc
            return None
        if self.background:
            self._enqueue(request)
            return None
        return self._send(request, self.raise_errors)

    def quick_report(
        self,
        worker_name: str,
        success: bool = True,
        duration_ms: Optional[int] = None,
        records_processed: int = 0,
        records_fetched: int = 0,
        **more: Any,
    ) -> Optional[SubmitResult]:
        """Builds and sends a report in one call; see :func:`runwarden.quick_report`."""
        report = build_quick_report(
            worker_name, success, duration_ms, records_processed, records_fetched, **more
        )
        return self.submit(report)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until the background queue is empty and the report in flight is answered.
        Returns False if ``timeout`` seconds passed first. Always True without ``background``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pending_cond:
            while self._pending > 0:
                if deadline is None:
                    self._pending_cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._pending_cond.wait(remaining)
        return True

    @property
    def pending(self) -> int:
        """Reports queued or in flight in the background sender."""
        with self._pending_cond:
            return self._pending

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flushes (up to ``timeout``, default ``exit_flush_timeout``), stops the sender thread and
        closes the channel. Returns whether everything queued was handled. The client can still
        be used afterwards (it reconnects); ``close`` just releases resources."""
        flushed = self.flush(self.exit_flush_timeout if timeout is None else timeout)
        with self._lock:
            thread, self._thread = self._thread, None
            if self._atexit_registered:
                atexit.unregister(self._flush_at_exit)
                self._atexit_registered = False
        if thread is not None:
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass  # still busy after the timeout: it is a daemon thread
            else:
                thread.join(timeout=1.0)
        if not flushed:
            log.warning("runwarden: closing with %d report(s) not yet delivered", self.pending)
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()
        return flushed

    # --- sending ----------------------------------------------------------------------------

    def _get_stub(self) -> report_service_pb2_grpc.ReportServiceStub:
        with self._lock:
            if self._stub is None:
                self._channel = _open_channel(self.addr)
                stub_class: Any = report_service_pb2_grpc.ReportServiceStub  # generated, untyped
                self._stub = stub_class(self._channel)
            return self._stub

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff_base * (2.0**attempt))
        return base / 2 + random.uniform(0, base / 2)

    def _send(
        self, request: report_service_pb2.SubmitReportRequest, raise_errors: bool
    ) -> Optional[SubmitResult]:
        report = request.report
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                response = self._get_stub().SubmitReport(
                    request, timeout=self.timeout, metadata=self._metadata
                )
            except grpc.RpcError as error:
                code = _error_code(error)
                details = _error_details(error)
                code_name = code.name if code is not None else "UNKNOWN"
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    violations = field_violations(error) or [FieldViolation("", details)]
                    text = "; ".join(str(v) for v in violations)
                    log.error(
                        "runwarden: report %s for worker %r rejected (INVALID_ARGUMENT): %s",
                        report.execution_id,
                        report.worker_name,
                        text,
                    )
                    if raise_errors:
                        raise InvalidReportError(
                            "invalid report: {}".format(text),
                            violations,
                            code=code,
                            execution_id=report.execution_id,
                            worker_name=report.worker_name,
                        ) from None
                    return None
                if code in RETRIABLE_CODES and not _too_large(code, details) and attempt + 1 < attempts:
                    delay = self._backoff(attempt)
                    log.warning(
                        "runwarden: report %s for worker %r: %s (%s); retry %d/%d in %.2fs "
                        "with the same execution_id",
                        report.execution_id,
                        report.worker_name,
                        code_name,
                        details,
                        attempt + 1,
                        self.retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                log.error(
                    "runwarden: report %s for worker %r not stored after %d attempt(s): %s (%s)",
                    report.execution_id,
                    report.worker_name,
                    attempt + 1,
                    code_name,
                    details,
                )
                if raise_errors:
                    raise RunwardenError(
                        "report not stored: {} ({})".format(code_name, details),
                        code=code,
                        execution_id=report.execution_id,
                        worker_name=report.worker_name,
                    ) from None
                return None
            except Exception as exc:  # noqa: BLE001 - reporting must never break the worker
                log.error(
                    "runwarden: report %s for worker %r not sent: %r",
                    report.execution_id,
                    report.worker_name,
                    exc,
                )
                if raise_errors:
                    raise RunwardenError(
                        "report not sent: {!r}".format(exc),
                        execution_id=report.execution_id,
                        worker_name=report.worker_name,
                    ) from exc
                return None
            result = SubmitResult.from_response(response)
            log.debug(
                "runwarden: report %s for worker %r stored%s: overall %.1f (%s)",
                result.execution_id,
                report.worker_name,
                " (duplicate)" if result.duplicate else "",
                result.overall_score,
                result.quality_level,
            )
            return result
        return None  # pragma: no cover - the loop always returns

    # --- background sender ------------------------------------------------------------------

    def _enqueue(self, request: report_service_pb2.SubmitReportRequest) -> None:
        self._ensure_thread()
        with self._pending_cond:
            self._pending += 1
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            with self._pending_cond:
                self._pending -= 1
                self._pending_cond.notify_all()
            log.error(
                "runwarden: background queue full (%d); dropped report %s for worker %r",
                self.queue_size,
                request.report.execution_id,
                request.report.worker_name,
            )
            if self.raise_errors:
                raise RunwardenError(
                    "background queue full; report dropped",
                    execution_id=request.report.execution_id,
                    worker_name=request.report.worker_name,
                ) from None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._sender_loop, name="runwarden-sender", daemon=True)
            self._thread.start()
            if not self._atexit_registered:
                atexit.register(self._flush_at_exit)
                self._atexit_registered = True

    def _sender_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._send(item, raise_errors=False)
            except Exception:  # noqa: BLE001 - the sender thread must survive anything
                log.exception("runwarden: background sender failed on a report")
            finally:
                with self._pending_cond:
                    self._pending -= 1
                    self._pending_cond.notify_all()

    def _flush_at_exit(self) -> None:
        if not self.flush(self.exit_flush_timeout):
            log.error(
                "runwarden: exiting with %d report(s) not delivered after %.1fs",
                self.pending,
                self.exit_flush_timeout,
            )


def _open_channel(addr: str) -> grpc.Channel:
    target = addr.strip()
    for prefix in ("http://", "grpc://"):
        if target.startswith(prefix):
            target = target[len(prefix) :]
    target = target.rstrip("/")
    if target.startswith("https://"):
        return grpc.secure_channel(
            target[len("https://") :], grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS
        )
    return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)


def build_quick_report(
    worker_name: str,
    success: bool = True,
    duration_ms: Optional[int] = None,
    records_processed: int = 0,
    records_fetched: int = 0,
    **more: Any,
) -> ExecutionReport:
    """The report :func:`runwarden.quick_report` sends. Keyword arguments named like a
    data_verification, resource_metrics or dependency_metrics field go there; ``error_message``,
    ``outcome``, ``worker_type``, ``custom_metrics``, ``execution_id``, ``started_at`` and
    ``completed_at`` set those report fields; any other keyword is added to custom_metrics."""
    report = ExecutionReport(worker_name=worker_name, worker_type=str(more.pop("worker_type", "") or ""))
    report.outcome = more.pop("outcome", None)
    if report.outcome is None:
        report.outcome = ExecutionOutcome.SUCCESS if success else ExecutionOutcome.FAILED
    report.error_message = more.pop("error_message", "") or ""
    execution_id = more.pop("execution_id", None)
    if execution_id:
        report.execution_id = str(execution_id)
    report.completed_at = more.pop("completed_at", None) or utcnow()
    report.started_at = more.pop("started_at", None)
    report.duration_ms = duration_ms
    custom = dict(more.pop("custom_metrics", None) or {})
    report.data_verification.records_processed = records_processed
    report.data_verification.records_fetched = records_fetched
    for key, value in more.items():
        if key in DATA_VERIFICATION_FIELDS:
            setattr(report.data_verification, key, value)
        elif key in RESOURCE_METRICS_FIELDS:
            setattr(report.resource_metrics, key, value)
        elif key in DEPENDENCY_METRICS_FIELDS:
            setattr(report.dependency_metrics, key, value)
        else:
            custom.setdefault(key, value)
    report.custom_metrics = custom
    return report
