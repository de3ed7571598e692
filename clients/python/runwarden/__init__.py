"""runwarden worker client: report every run of a scheduled worker to runwarden.

Porting a worker from ``backend.workers.execution_report`` means changing only the import::

    from runwarden import quick_report
    quick_report(worker_name="youtube_worker", success=True, duration_ms=5000,
                 records_processed=150, records_fetched=150)

Reporting never breaks the worker: every call is bounded by a timeout, retriable failures are
retried with the same execution_id, and errors are logged on the ``runwarden`` logger instead of
raised (unless ``raise_errors=True``).
"""

from __future__ import annotations

from ._api import (
    configure,
    flush,
    get_client,
    quick_report,
    reset_default_client,
    submit_execution_report,
)
from ._client import (
    DEFAULT_ADDR,
    RETRIABLE_CODES,
    Client,
    FieldViolation,
    InvalidReportError,
    RunwardenError,
    SubmitResult,
)
from ._monitor import current_report, monitor, monitored, peak_memory_mb
from ._report import (
    DataVerification,
    DependencyMetrics,
    ExecutionOutcome,
    ExecutionReport,
    ResourceMetrics,
    create_report,
)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "0.0.0"
    try:
        return version("runwarden-client")
    except PackageNotFoundError:  # pragma: no cover - imported from an uninstalled tree
        return "0.0.0"


__version__ = _version()

__all__ = [
    "DEFAULT_ADDR",
    "RETRIABLE_CODES",
    "Client",
    "DataVerification",
    "DependencyMetrics",
    "ExecutionOutcome",
    "ExecutionReport",
    "FieldViolation",
    "InvalidReportError",
    "ResourceMetrics",
    "RunwardenError",
    "SubmitResult",
    "__version__",
    "configure",
    "create_report",
    "current_report",
    "flush",
    "get_client",
    "monitor",
    "monitored",
    "peak_memory_mb",
    "quick_report",
    "reset_default_client",
    "submit_execution_report",
]
