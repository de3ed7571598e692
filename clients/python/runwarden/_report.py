"""The report a worker fills in, and its translation to the ``runwarden.v1.ExecutionReport`` proto."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar, Union

from google.protobuf import struct_pb2, timestamp_pb2

from ._pb import report_pb2

log = logging.getLogger("runwarden")

#: The server's limit on ``error_message`` (bytes of UTF-8); longer messages are truncated.
MAX_ERROR_MESSAGE_BYTES = 8 * 1024


class ExecutionOutcome(str, enum.Enum):
    """How a run ended."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"

    @classmethod
    def parse(cls, value: Union["ExecutionOutcome", str, int]) -> "ExecutionOutcome":
        """Accepts a member, its name or value in any case (``"SUCCESS"``, ``"success"``,
        ``"OUTCOME_SUCCESS"``) or the proto enum number (1-5)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            raise ValueError("outcome must be an ExecutionOutcome, not a bool")
        if isinstance(value, int):
            for member, number in _OUTCOME_TO_PROTO.items():
                if number == value:
                    return member
            raise ValueError("unknown outcome number {}".format(value))
        if isinstance(value, str):
            name = value.strip().upper()
            if name.startswith("OUTCOME_"):
                name = name[len("OUTCOME_") :]
            try:
                return cls[name]
            except KeyError:
                pass
        raise ValueError(
            "unknown outcome {!r} (expected one of {})".format(value, ", ".join(m.name for m in cls))
        )

    @property
    def proto_value(self) -> int:
        return _OUTCOME_TO_PROTO[self]


_OUTCOME_TO_PROTO: Dict[ExecutionOutcome, int] = {
    ExecutionOutcome.SUCCESS: report_pb2.OUTCOME_SUCCESS,
    ExecutionOutcome.PARTIAL: report_pb2.OUTCOME_PARTIAL,
    ExecutionOutcome.FAILED: report_pb2.OUTCOME_FAILED,
    ExecutionOutcome.TIMEOUT: report_pb2.OUTCOME_TIMEOUT,
    ExecutionOutcome.SKIPPED: report_pb2.OUTCOME_SKIPPED,
}


@dataclass
class DataVerification:
    """What a run fetched, produced and checked. ``None`` means "not known / not checked"."""

    records_fetched: int = 0
    records_processed: int = 0
    records_stored: int = 0
    records_failed: int = 0
    records_skipped: int = 0
    newest_record_age_seconds: Optional[float] = None
    oldest_record_age_seconds: Optional[float] = None
    avg_record_age_seconds: Optional[float] = None
    expected_fields_present: Optional[bool] = None
    missing_fields: List[str] = field(default_factory=list)
    null_field_counts: Dict[str, int] = field(default_factory=dict)
    validation_checks_passed: int = 0
    validation_checks_failed: int = 0
    validation_errors: List[str] = field(default_factory=list)
    api_calls_made: int = 0
    api_calls_succeeded: int = 0
    api_calls_failed: int = 0
    api_rate_limited: bool = False
    api_quota_remaining: Optional[int] = None
    cache_hits: int = 0
    cache_misses: int = 0
    cache_writes: int = 0
    cache_ttl_seconds: Optional[int] = None


@dataclass
class ResourceMetrics:
    """What a run cost. ``None`` memory or CPU means "not measured"."""

    memory_peak_mb: Optional[float] = None
    cpu_percent_avg: Optional[float] = None
    network_bytes_received: int = 0
    database_query_count: int = 0
    redis_operations: int = 0


@dataclass
class DependencyMetrics:
    """How a run relates to the pipelines around it."""

    upstream_data_age_seconds: Optional[float] = None
    downstream_consumers_waiting: int = 0


def _new_execution_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Ids made later sort
    later, so the server's index of execution ids grows at its end instead of at random pages (a
    random uuid4 per report costs the server about a quarter of its throughput at scale)."""
    millis = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = rand >> 62 & 0xFFF, rand & (1 << 62) - 1
    return str(uuid.UUID(int=millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b))


@dataclass
class ExecutionReport:
    """One run of one worker. ``execution_id`` is fixed at creation so that every retry of this
    report is recognised by the server as the same run."""

    worker_name: str
    execution_id: str = field(default_factory=_new_execution_id)
    worker_type: str = ""
    started_at: Optional[_dt.datetime] = None
    completed_at: Optional[_dt.datetime] = None
    duration_ms: Optional[int] = None
    #: ``None`` is sent as FAILED when ``error_message`` is set, else as SUCCESS.
    outcome: Optional[ExecutionOutcome] = None
    error_message: Optional[str] = ""
    data_verification: DataVerification = field(default_factory=DataVerification)
    resource_metrics: ResourceMetrics = field(default_factory=ResourceMetrics)
    dependency_metrics: DependencyMetrics = field(default_factory=DependencyMetrics)
    custom_metrics: Dict[str, Any] = field(default_factory=dict)


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def create_report(worker_name: str, worker_type: str = "") -> ExecutionReport:
    """A new report with a fresh ``execution_id`` and ``started_at`` = now (UTC)."""
    return ExecutionReport(worker_name=worker_name, worker_type=worker_type, started_at=utcnow())


DATA_VERIFICATION_FIELDS = frozenset(f.name for f in dataclasses.fields(DataVerification))
RESOURCE_METRICS_FIELDS = frozenset(f.name for f in dataclasses.fields(ResourceMetrics))
DEPENDENCY_METRICS_FIELDS = frozenset(f.name for f in dataclasses.fields(DependencyMetrics))


class ConversionError(ValueError):
    """A report field whose value cannot be put into the proto (wrong type, bad outcome)."""

    def __init__(self, field_path: str, description: str) -> None:
        super().__init__("{}: {}".format(field_path, description))
        self.field = field_path
        self.description = description


# --- conversion -------------------------------------------------------------------------------


def _to_int(path: str, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConversionError(path, "must be a finite number, got {!r}".format(value))
        return int(round(value))
    if isinstance(value, (str, decimal.Decimal)):
        try:
            return int(decimal.Decimal(str(value).strip()).to_integral_value())
        except (decimal.InvalidOperation, ValueError):
            pass
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConversionError(path, "must be an integer, got {!r}".format(value)) from None


def _to_float(path: str, value: Any) -> float:
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConversionError(path, "must be a number, got {!r}".format(value)) from None


def _to_bool(path: str, value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no", ""):
            return False
        raise ConversionError(path, "must be a boolean, got {!r}".format(value))
    return bool(value)


def _to_timestamp(path: str, value: Any) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:  # naive datetimes are taken as UTC (datetime.utcnow() style)
            value = value.replace(tzinfo=_dt.timezone.utc)
        ts.FromDatetime(value.astimezone(_dt.timezone.utc))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ts.FromNanoseconds(int(round(float(value) * 1e9)))  # seconds since the epoch
    else:
        raise ConversionError(path, "must be a datetime, got {!r}".format(value))
    return ts


def _as_datetime(path: str, value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)
    raise ConversionError(path, "must be a datetime, got {!r}".format(value))


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Turns custom metrics into what ``google.protobuf.Struct`` holds (dict, list, str, float,
    bool, None): tuples and sets become lists, datetimes ISO strings, enums their value, other
    objects ``str()``. Non-finite floats become strings (the server rejects NaN and infinity)."""
    if _depth > 64:
        return str(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return to_jsonable(float(value), _depth + 1)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _depth + 1)
    return str(value)


_S = TypeVar("_S")


def _section(path: str, value: Any, cls: Type[_S]) -> _S:
    """A section of the report; a plain dict is accepted in place of the dataclass."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ConversionError(path, "unknown field(s) {}".format(", ".join(unknown)))
        return cls(**value)
    raise ConversionError(path, "must be a {} or a dict, got {!r}".format(cls.__name__, value))


def _warn_unknown_attributes(path: str, obj: Any) -> None:
    known = {f.name for f in dataclasses.fields(obj)}
    extra = sorted(k for k in vars(obj) if k not in known and not k.startswith("_"))
    if extra:
        log.warning("runwarden: ignoring unknown %s attribute(s): %s", path, ", ".join(extra))


def _fill_section(path: str, section: Any, message: Any) -> None:
    """Copies a dataclass section onto its proto message, field by field, by type."""
    _warn_unknown_attributes(path, section)
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        fpath = "{}.{}".format(path, f.name)
        if value is None:
            continue  # optional field left absent (or a list/map/count the worker nulled)
        current = getattr(message, f.name)
        if isinstance(current, bool):
            setattr(message, f.name, _to_bool(fpath, value))
        elif isinstance(current, float):
            setattr(message, f.name, _to_float(fpath, value))
        elif isinstance(current, int):
            setattr(message, f.name, _to_int(fpath, value))
        elif f.name == "null_field_counts":
            if not isinstance(value, Mapping):
                raise ConversionError(fpath, "must be a dict of field name to count")
            for key, count in value.items():
                current[str(key)] = _to_int("{}[{}]".format(fpath, key), count)
        elif f.name in ("missing_fields", "validation_errors"):
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise ConversionError(fpath, "must be a list of strings")
            current.extend(str(v) for v in value)
        else:  # pragma: no cover - every proto field type is handled above
            raise ConversionError(fpath, "unsupported field")


def to_proto(report: ExecutionReport, now: Optional[_dt.datetime] = None) -> report_pb2.ExecutionReport:
    """Builds the proto for ``report``, completing it first: an empty ``execution_id`` gets a
    UUID and a missing ``completed_at`` becomes ``now``, both written back to ``report`` so that a
    resubmission of the same object is the same run. ``started_at`` defaults to ``completed_at``
    minus ``duration_ms`` (or to ``completed_at``); when all three are given but disagree by more
    than the server's 1 s tolerance, ``duration_ms`` is trusted and ``started_at`` moved."""
    if not isinstance(report, ExecutionReport):
        raise ConversionError("report", "must be an ExecutionReport, got {!r}".format(type(report).__name__))
    _warn_unknown_attributes("report", report)
    msg = report_pb2.ExecutionReport()
    if not isinstance(report.worker_name, str):
        raise ConversionError("worker_name", "must be a string")
    msg.worker_name = report.worker_name
    if not report.execution_id:
        report.execution_id = _new_execution_id()
    msg.execution_id = str(report.execution_id)
    msg.worker_type = str(report.worker_type or "")

    if report.completed_at is None:
        report.completed_at = now or utcnow()
    completed = _as_datetime("completed_at", report.completed_at)
    duration: Optional[int] = None
    if report.duration_ms is not None:
        duration = _to_int("duration_ms", report.duration_ms)
    if report.started_at is None:
        started = completed - _dt.timedelta(milliseconds=duration or 0)
    else:
        started = _as_datetime("started_at", report.started_at)
        if duration is not None:
            measured_ms = (completed - started).total_seconds() * 1000.0
            if abs(measured_ms - duration) > 1000.0:
                log.warning(
                    "runwarden: %s duration_ms=%d disagrees with completed_at - started_at "
                    "(%.0f ms); sending started_at = completed_at - duration_ms",
                    report.worker_name,
                    duration,
                    measured_ms,
                )
                started = completed - _dt.timedelta(milliseconds=duration)
    msg.started_at.CopyFrom(_to_timestamp("started_at", started))
    msg.completed_at.CopyFrom(_to_timestamp("completed_at", completed))
    if duration is not None:
        msg.duration_ms = duration

    error_message = report.error_message or ""
    if not isinstance(error_message, str):
        error_message = str(error_message)
    msg.error_message = _truncate_utf8(error_message, MAX_ERROR_MESSAGE_BYTES)

    if report.outcome is None:
        outcome = ExecutionOutcome.FAILED if error_message else ExecutionOutcome.SUCCESS
    else:
        try:
            outcome = ExecutionOutcome.parse(report.outcome)
        except ValueError as exc:
            raise ConversionError("outcome", str(exc)) from None
    msg.outcome = outcome.proto_value  # type: ignore[assignment]

    dv = _section("data_verification", report.data_verification, DataVerification)
    _fill_section("data_verification", dv, msg.data_verification)
    rm = _section("resource_metrics", report.resource_metrics, ResourceMetrics)
    _fill_section("resource_metrics", rm, msg.resource_metrics)
    dm = _section("dependency_metrics", report.dependency_metrics, DependencyMetrics)
    _fill_section("dependency_metrics", dm, msg.dependency_metrics)

    if report.custom_metrics:
        if not isinstance(report.custom_metrics, Mapping):
            raise ConversionError("custom_metrics", "must be a dict")
        struct = struct_pb2.Struct()
        try:
            struct.update(to_jsonable(report.custom_metrics))
        except (TypeError, ValueError) as exc:  # pragma: no cover - to_jsonable prevents it
            raise ConversionError("custom_metrics", str(exc)) from None
        msg.custom_metrics.CopyFrom(struct)
    return msg
