"""Reporting never breaks the worker: timeouts, retries with the same execution_id, background sending."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent import futures
from typing import Iterator, List, Tuple

import grpc
import pytest

import runwarden
from runwarden.v1 import analysis_pb2, report_service_pb2, report_service_pb2_grpc
from rwtest import free_port, list_executions, unique_name


def _records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> List[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "runwarden" and r.levelno == level and text in r.getMessage()
    ]


def test_retry_reuses_the_execution_id_until_the_server_is_up(start_server, rw_log):
    port = free_port()
    addr = "127.0.0.1:{}".format(port)
    client = runwarden.Client(addr=addr, timeout=2.0, retries=30, backoff_base=0.2, backoff_max=0.8)
    servers = []
    starter = threading.Timer(0.8, lambda: servers.append(start_server(addr)))
    starter.start()
    name = unique_name("late_server")
    report = runwarden.create_report(name)
    try:
        result = client.submit(report)  # nothing listens yet: UNAVAILABLE, retried
    finally:
        starter.join()
        client.close()

    assert servers, "the delayed server did not start"
    assert result is not None
    assert result.execution_id == report.execution_id
    assert result.duplicate is False
    retries = _records(rw_log, logging.WARNING, "retry")
    assert retries, "the first attempt should have failed"
    assert all(report.execution_id in r.getMessage() for r in retries)
    assert all("UNAVAILABLE" in r.getMessage() for r in retries)
    stored = list_executions(addr, name)
    assert [e.execution_id for e in stored] == [report.execution_id]


def test_unreachable_server_returns_none_within_the_bound(monkeypatch, rw_log):
    addr = "127.0.0.1:{}".format(free_port())  # nothing listens there
    client = runwarden.Client(addr=addr, timeout=1.0, retries=2, backoff_base=0.1)
    t0 = time.monotonic()
    assert client.quick_report(unique_name("offline"), duration_ms=5) is None
    elapsed = time.monotonic() - t0
    # Bound: (retries + 1) * timeout + the backoffs (0.1 + 0.2 at most).
    assert elapsed < 3 * 1.0 + 0.3 + 0.5
    assert len(_records(rw_log, logging.WARNING, "retry")) == 2
    assert len(_records(rw_log, logging.ERROR, "not stored after 3 attempt(s)")) == 1
    client.close()

    # The module-level API through the environment behaves the same, and the worker goes on.
    monkeypatch.setenv("RUNWARDEN_ADDR", addr)
    runwarden.reset_default_client()
    try:
        worker_state = "before"
        t0 = time.monotonic()
        result = runwarden.quick_report(worker_name=unique_name("offline"), success=True, duration_ms=10)
        worker_state = "after"
        assert result is None and worker_state == "after"
        assert time.monotonic() - t0 < 4 * 5.0 + 0.2 + 0.4 + 0.8 + 1.0  # the defaults' bound
    finally:
        runwarden.reset_default_client()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections but never speaks HTTP/2 (a hung server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield "127.0.0.1:{}".format(sock.getsockname()[1])
    sock.close()


def test_hung_server_is_bounded_by_the_per_call_timeout(silent_listener, rw_log):
    client = runwarden.Client(addr=silent_listener, timeout=0.5, retries=1, backoff_base=0.05)
    t0 = time.monotonic()
    assert client.quick_report(unique_name("hung"), duration_ms=5) is None
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 2 * 0.5 + 0.05 + 1.5  # two deadlines, one backoff, slack
    assert _records(rw_log, logging.WARNING, "DEADLINE_EXCEEDED")
    client.close()


def test_unreachable_server_raises_with_raise_errors():
    client = runwarden.Client(
        addr="127.0.0.1:{}".format(free_port()), timeout=1.0, retries=0, raise_errors=True
    )
    with pytest.raises(runwarden.RunwardenError) as info:
        client.quick_report(unique_name("offline"), duration_ms=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert not isinstance(info.value, runwarden.InvalidReportError)
    client.close()


def test_background_sender_and_flush(server, query, rw_log):
    name = unique_name("background")
    client = runwarden.Client(addr=server.addr, background=True, queue_size=100)
    ids = []
    t0 = time.monotonic()
    for i in range(25):
        report = runwarden.create_report(name)
        report.data_verification.records_processed = i
        assert client.submit(report) is None  # queued, not sent by the caller
        ids.append(report.execution_id)
    assert time.monotonic() - t0 < 2.0
    assert client.flush(timeout=20.0) is True
    assert client.pending == 0
    stored = list_executions(query, name)
    assert sorted(e.execution_id for e in stored) == sorted(ids)
    assert client.close() is True
    assert not _records(rw_log, logging.ERROR, "")


def test_background_queue_full_drops_and_logs(rw_log):
    addr = "127.0.0.1:{}".format(free_port())  # unreachable: the sender is kept busy retrying
    client = runwarden.Client(
        addr=addr, background=True, queue_size=2, timeout=1.0, retries=1, backoff_base=0.3
    )
    for _ in range(6):
        assert client.submit(runwarden.create_report(unique_name("full"))) is None
    dropped = _records(rw_log, logging.ERROR, "queue full")
    assert 3 <= len(dropped) <= 4
    assert client.flush(timeout=10.0) is True  # the rest fail (logged) and the queue drains
    assert client.close(timeout=1.0) is True


def test_flush_times_out_and_without_background_is_immediate():
    assert runwarden.Client(addr="127.0.0.1:1").flush(0) is True
    client = runwarden.Client(
        addr="127.0.0.1:{}".format(free_port()), background=True, timeout=1.0, retries=1, backoff_base=0.6
    )
    client.submit(runwarden.create_report(unique_name("slow")))
    assert client.flush(timeout=0.05) is False
    assert client.flush(timeout=5.0) is True
    client.close()


# --- an in-process fake ReportService, for what a real server cannot be made to do on demand ---


class FakeReportService(report_service_pb2_grpc.ReportServiceServicer):
    def __init__(self, failures: List[Tuple[grpc.StatusCode, str]], sleep_first: float = 0.0) -> None:
        self.failures = list(failures)
        self.sleep_first = sleep_first
        self.calls: List[Tuple[str, dict]] = []
        self.lock = threading.Lock()

    def SubmitReport(self, request, context):  # noqa: N802 - gRPC naming
        with self.lock:
            self.calls.append((request.report.execution_id, dict(context.invocation_metadata())))
            n = len(self.calls)
            failure = self.failures.pop(0) if self.failures else None
        if n == 1 and self.sleep_first:
            time.sleep(self.sleep_first)
        if failure is not None:
            context.abort(failure[0], failure[1])
        return report_service_pb2.SubmitReportResponse(
            execution_id=request.report.execution_id,
            duplicate=n > 1 and self.sleep_first > 0,
            quality_level=analysis_pb2.QUALITY_LEVEL_GOOD,
            scores=analysis_pb2.Scores(overall=80.0),
            reasons=analysis_pb2.ScoreReasons(performance=["slow (-20.0)"]),
        )


@pytest.fixture
def fake_server():
    started = []

    def start(service: FakeReportService) -> str:
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        report_service_pb2_grpc.add_ReportServiceServicer_to_server(service, srv)
        port = srv.add_insecure_port("127.0.0.1:0")
        srv.start()
        started.append(srv)
        return "127.0.0.1:{}".format(port)

    yield start
    for srv in started:
        srv.stop(grace=None)


def test_resource_exhausted_is_retried_with_the_same_execution_id(fake_server, rw_log):
    service = FakeReportService([(grpc.StatusCode.RESOURCE_EXHAUSTED, "ingest queue full")] * 2)
    client = runwarden.Client(addr=fake_server(service), retries=3, backoff_base=0.05)
    report = runwarden.create_report(unique_name("busy"))
    result = client.submit(report)
    assert result is not None
    assert result.quality_level == "GOOD" and result.overall_score == 80.0
    assert result.reasons["performance"] == ["slow (-20.0)"]
    assert [call[0] for call in service.calls] == [report.execution_id] * 3
    assert len(_records(rw_log, logging.WARNING, "RESOURCE_EXHAUSTED")) == 2
    client.close()


def test_deadline_exceeded_is_retried_with_the_same_execution_id(fake_server):
    service = FakeReportService([], sleep_first=1.5)
    client = runwarden.Client(addr=fake_server(service), timeout=0.5, retries=3, backoff_base=0.05)
    report = runwarden.create_report(unique_name("slow_ack"))
    result = client.submit(report)
    assert result is not None and result.execution_id == report.execution_id
    ids = [call[0] for call in service.calls]
    assert len(ids) >= 2 and set(ids) == {report.execution_id}
    client.close()


@pytest.mark.parametrize(
    "code,message",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "invalid report: worker_name: must not be empty"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "message length too large: found 2000000 bytes"),
        (grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
def test_permanent_errors_are_not_retried(fake_server, rw_log, code, message):
    service = FakeReportService([(code, message)] * 5)
    client = runwarden.Client(addr=fake_server(service), retries=3, backoff_base=0.05)
    assert client.submit(runwarden.create_report(unique_name("permanent"))) is None
    assert len(service.calls) == 1
    errors = _records(rw_log, logging.ERROR, code.name)
    assert len(errors) == 1 and message.split(":")[-1].strip() in errors[0].getMessage()
    client.close()


def test_token_is_sent_as_bearer_metadata(fake_server, monkeypatch):
    service = FakeReportService([])
    addr = fake_server(service)
    runwarden.Client(addr=addr, token="s3cret").quick_report(unique_name("auth"), duration_ms=1)
    monkeypatch.setenv("RUNWARDEN_ADDR", addr)
    monkeypatch.setenv("RUNWARDEN_TOKEN", "from-env")
    runwarden.reset_default_client()
    try:
        runwarden.quick_report(unique_name("auth"), duration_ms=1)
    finally:
        runwarden.reset_default_client()
    monkeypatch.delenv("RUNWARDEN_TOKEN")
    runwarden.Client(addr=addr).quick_report(unique_name("auth"), duration_ms=1)
    auth = [call[1].get("authorization") for call in service.calls]
    assert auth == ["Bearer s3cret", "Bearer from-env", None]


def test_default_address_and_configure(monkeypatch):
    monkeypatch.delenv("RUNWARDEN_ADDR", raising=False)
    assert runwarden.Client().addr == "127.0.0.1:50051"
    runwarden.reset_default_client()
    try:
        configured = runwarden.configure(addr="127.0.0.1:1", retries=0)
        assert runwarden.get_client() is configured and configured.retries == 0
    finally:
        runwarden.reset_default_client()
