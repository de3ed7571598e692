"""monitor (context manager) and monitored (decorator) against a real runwarden."""

from __future__ import annotations

import asyncio
import time

import pytest

import runwarden
from runwarden import ExecutionOutcome
from runwarden.v1 import report_pb2
from rwtest import list_executions, unique_name


def _burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        sum(range(1000))


def test_monitor_success(client, query):
    name = unique_name("monitor_ok")
    watcher = runwarden.monitor(name, "analytics", client=client)
    with watcher as report:
        assert runwarden.current_report() is report
        report.data_verification.records_fetched = 10
        report.data_verification.records_processed = 10
        _burn_cpu(0.1)
        time.sleep(0.05)
    assert runwarden.current_report() is None
    assert isinstance(watcher.result, runwarden.SubmitResult)

    (stored,) = list_executions(query, name)
    r = stored.report
    assert stored.execution_id == report.execution_id
    assert r.outcome == report_pb2.OUTCOME_SUCCESS
    assert r.worker_type == "analytics"
    assert r.error_message == ""
    assert 150 <= r.duration_ms < 5000
    assert r.data_verification.records_processed == 10
    assert r.resource_metrics.HasField("memory_peak_mb") and r.resource_metrics.memory_peak_mb > 1.0
    assert r.resource_metrics.HasField("cpu_percent_avg")
    assert 1.0 < r.resource_metrics.cpu_percent_avg <= 10000.0  # ~66% on an idle machine


def test_monitor_exception_is_reported_and_reraised(client, query):
    name = unique_name("monitor_fail")
    with pytest.raises(ValueError, match="boom: upstream returned 503"):
        with runwarden.monitor(name, client=client) as report:
            report.data_verification.records_fetched = 3
            raise ValueError("boom: upstream returned 503")
    (stored,) = list_executions(query, name)
    assert stored.report.outcome == report_pb2.OUTCOME_FAILED
    assert stored.report.error_message == "boom: upstream returned 503"
    assert stored.report.data_verification.records_fetched == 3


def test_monitor_keeps_an_explicit_outcome(client, query):
    name = unique_name("monitor_partial")
    with runwarden.monitor(name, client=client) as report:
        report.outcome = ExecutionOutcome.PARTIAL
        report.resource_metrics.memory_peak_mb = 42.0
    (stored,) = list_executions(query, name)
    assert stored.report.outcome == report_pb2.OUTCOME_PARTIAL
    assert stored.report.resource_metrics.memory_peak_mb == 42.0  # not overwritten


def test_monitor_never_breaks_the_worker_when_offline():
    offline = runwarden.Client(addr="127.0.0.1:1", timeout=0.5, retries=0)
    with runwarden.monitor(unique_name("offline"), client=offline) as report:
        value = 41 + 1
    assert value == 42 and report.outcome is ExecutionOutcome.SUCCESS
    offline.close()


def test_monitored_decorator(default_client_env, query):
    name = unique_name("decorated")

    @runwarden.monitored(name)
    def job(x: int, *, y: int) -> int:
        runwarden.current_report().data_verification.records_processed = x + y  # type: ignore[union-attr]
        return x * y

    @runwarden.monitored(name)
    def broken() -> None:
        raise RuntimeError("database is locked")

    assert job.__name__ == "job"
    assert job(6, y=7) == 42
    with pytest.raises(RuntimeError, match="database is locked"):
        broken()

    stored = list_executions(query, name)  # newest first
    assert [e.report.outcome for e in stored] == [report_pb2.OUTCOME_FAILED, report_pb2.OUTCOME_SUCCESS]
    assert stored[0].report.error_message == "database is locked"
    assert stored[1].report.data_verification.records_processed == 13
    assert stored[0].report.resource_metrics.HasField("memory_peak_mb")


def test_monitored_bare_and_async(client, query):
    @runwarden.monitored
    def nightly_rollup() -> str:
        return "done"

    runwarden.configure(addr=client.addr)
    try:
        assert nightly_rollup() == "done"
    finally:
        runwarden.reset_default_client()
    assert len(list_executions(query, "nightly_rollup")) >= 1

    name = unique_name("async_job")

    @runwarden.monitored(name, client=client)
    async def fetch() -> int:
        await asyncio.sleep(0.01)
        return 7

    @runwarden.monitored(name, client=client)
    async def fetch_fails() -> int:
        await asyncio.sleep(0.01)
        raise KeyError("video_id")

    assert asyncio.run(fetch()) == 7
    with pytest.raises(KeyError):
        asyncio.run(fetch_fails())
    outcomes = [e.report.outcome for e in list_executions(query, name)]
    assert outcomes == [report_pb2.OUTCOME_FAILED, report_pb2.OUTCOME_SUCCESS]
    assert list_executions(query, name)[0].report.error_message == "'video_id'"


def test_package_ships_types_and_generated_stubs():
    import importlib.resources as resources

    from runwarden.v1 import query_service_pb2_grpc, report_service_pb2_grpc

    assert resources.files("runwarden").joinpath("py.typed").is_file()
    assert resources.files("runwarden.v1").joinpath("report_pb2.pyi").is_file()
    assert hasattr(report_service_pb2_grpc, "ReportServiceStub")
    assert hasattr(query_service_pb2_grpc, "QueryServiceStub")
