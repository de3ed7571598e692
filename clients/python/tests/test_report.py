"""Reports reach a real runwarden and are stored as sent."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import json_format

import runwarden
from runwarden import ExecutionOutcome
from runwarden.v1 import query_service_pb2, report_pb2

from rwtest import list_executions, unique_name


def test_generated_execution_ids_are_time_ordered_uuid7():
    from runwarden._report import _new_execution_id

    before = int(datetime.now(timezone.utc).timestamp() * 1000)
    ids = [uuid.UUID(_new_execution_id()) for _ in range(1000)]
    after = int(datetime.now(timezone.utc).timestamp() * 1000)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert all(before <= u.int >> 80 <= after for u in ids)
    assert len(set(ids)) == len(ids)
    time.sleep(0.002)
    later = uuid.UUID(_new_execution_id())
    assert all(u < later for u in ids), "an id made later sorts after"


def test_quick_report_stores_a_run(default_client_env, query, rw_log):
    name = unique_name("youtube_worker")
    before = datetime.now(timezone.utc)

    # The Python-era call, unchanged apart from the import.
    result = runwarden.quick_report(
        worker_name=name, success=True, duration_ms=5000, records_processed=150, records_fetched=150
    )

    assert isinstance(result, runwarden.SubmitResult)
    assert result.duplicate is False
    stored = list_executions(query, name)
    assert [e.execution_id for e in stored] == [result.execution_id]
    report = stored[0].report
    assert report.worker_name == name
    assert report.outcome == report_pb2.OUTCOME_SUCCESS
    assert report.duration_ms == 5000
    assert report.data_verification.records_processed == 150
    assert report.data_verification.records_fetched == 150
    completed = report.completed_at.ToDatetime(tzinfo=timezone.utc)
    started = report.started_at.ToDatetime(tzinfo=timezone.utc)
    assert before - timedelta(seconds=1) <= completed <= datetime.now(timezone.utc)
    assert completed - started == timedelta(milliseconds=5000)
    assert runwarden.get_client().addr == default_client_env


def test_quick_report_routes_extra_keywords(client, query):
    name = unique_name("quick_extra")
    result = client.quick_report(
        name,
        success=False,
        duration_ms=1200,
        records_processed=3,
        records_fetched=4,
        records_failed=1,
        api_calls_made=2,
        api_quota_remaining=77,
        null_field_counts={"title": 2},
        memory_peak_mb=64.5,
        redis_operations=9,
        upstream_data_age_seconds=30.0,
        downstream_consumers_waiting=2,
        error_message="upstream 503",
        worker_type="video",
        custom_metrics={"quota_used_today": 192},
        region="eu-west",  # not a report field: recorded in custom_metrics
    )
    assert result is not None
    (stored,) = list_executions(query, name)
    r = stored.report
    assert r.outcome == report_pb2.OUTCOME_FAILED
    assert r.error_message == "upstream 503"
    assert r.worker_type == "video"
    dv = r.data_verification
    assert (dv.records_processed, dv.records_fetched, dv.records_failed, dv.api_calls_made) == (3, 4, 1, 2)
    assert dv.HasField("api_quota_remaining") and dv.api_quota_remaining == 77
    assert dict(dv.null_field_counts) == {"title": 2}
    assert r.resource_metrics.memory_peak_mb == 64.5
    assert r.resource_metrics.redis_operations == 9
    assert r.dependency_metrics.upstream_data_age_seconds == 30.0
    assert r.dependency_metrics.downstream_consumers_waiting == 2
    assert json_format.MessageToDict(r.custom_metrics) == {"quota_used_today": 192, "region": "eu-west"}


def test_create_report_with_every_field(client, query):
    name = unique_name("youtube_worker")
    report = runwarden.create_report(name, worker_type="analytics")
    assert report.started_at is not None and report.started_at.tzinfo is not None
    assert len(report.execution_id) == 36

    report.started_at = datetime.now(timezone.utc) - timedelta(seconds=42)
    dv = report.data_verification
    dv.records_fetched = 200
    dv.records_processed = 195
    dv.records_stored = 190
    dv.records_failed = 5
    dv.records_skipped = 3
    dv.newest_record_age_seconds = 12.5
    dv.oldest_record_age_seconds = 3600.0
    dv.avg_record_age_seconds = 900.25
    dv.expected_fields_present = False
    dv.missing_fields = ["thumbnail", "duration"]
    dv.null_field_counts = {"description": 7, "tags": 0}
    dv.validation_checks_passed = 10
    dv.validation_checks_failed = 2
    dv.validation_errors = ["row 7: bad date", "row 9: empty title"]
    dv.api_calls_made = 4
    dv.api_calls_succeeded = 3
    dv.api_calls_failed = 1
    dv.api_rate_limited = True
    dv.api_quota_remaining = 9808
    dv.cache_hits = 11
    dv.cache_misses = 2
    dv.cache_writes = 4
    dv.cache_ttl_seconds = 300
    rm = report.resource_metrics
    rm.memory_peak_mb = 128
    rm.cpu_percent_avg = 37.5
    rm.network_bytes_received = 1_048_576
    rm.database_query_count = 6
    rm.redis_operations = 12
    report.dependency_metrics.upstream_data_age_seconds = 61.0
    report.dependency_metrics.downstream_consumers_waiting = 3
    report.custom_metrics = {
        "categories_fetched": ["gaming", "music", "entertainment"],
        "quota_used_today": 192,
        "nested": {"ratio": 0.25, "flags": [True, False, None], "deep": {"x": "y"}},
        "window": (1, 2),
        "as_of": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    report.outcome = ExecutionOutcome.PARTIAL
    report.error_message = "5 records failed"
    report.completed_at = datetime.now(timezone.utc)
    report.duration_ms = int((report.completed_at - report.started_at).total_seconds() * 1000)

    result = runwarden.Client(addr=client.addr).submit(report)

    assert result is not None and result.execution_id == report.execution_id
    execution = query.GetExecution(
        query_service_pb2.GetExecutionRequest(execution_id=report.execution_id), timeout=10
    )
    r = execution.report
    assert r.worker_name == name and r.worker_type == "analytics"
    assert r.execution_id == report.execution_id
    assert r.outcome == report_pb2.OUTCOME_PARTIAL
    assert r.error_message == "5 records failed"
    assert r.duration_ms == report.duration_ms
    assert r.started_at.ToDatetime(tzinfo=timezone.utc) == report.started_at
    assert r.completed_at.ToDatetime(tzinfo=timezone.utc) == report.completed_at
    got = r.data_verification
    assert (got.records_fetched, got.records_processed, got.records_stored) == (200, 195, 190)
    assert (got.records_failed, got.records_skipped) == (5, 3)
    assert got.newest_record_age_seconds == 12.5
    assert got.oldest_record_age_seconds == 3600.0
    assert got.avg_record_age_seconds == 900.25
    assert got.HasField("expected_fields_present") and got.expected_fields_present is False
    assert list(got.missing_fields) == ["thumbnail", "duration"]
    assert dict(got.null_field_counts) == {"description": 7, "tags": 0}
    assert (got.validation_checks_passed, got.validation_checks_failed) == (10, 2)
    assert list(got.validation_errors) == ["row 7: bad date", "row 9: empty title"]
    assert (got.api_calls_made, got.api_calls_succeeded, got.api_calls_failed) == (4, 3, 1)
    assert got.api_rate_limited is True
    assert got.api_quota_remaining == 9808
    assert (got.cache_hits, got.cache_misses, got.cache_writes) == (11, 2, 4)
    assert got.cache_ttl_seconds == 300
    res = r.resource_metrics
    assert (res.memory_peak_mb, res.cpu_percent_avg) == (128.0, 37.5)
    assert (res.network_bytes_received, res.database_query_count, res.redis_operations) == (1048576, 6, 12)
    assert r.dependency_metrics.upstream_data_age_seconds == 61.0
    assert r.dependency_metrics.downstream_consumers_waiting == 3
    assert json_format.MessageToDict(r.custom_metrics) == {
        "categories_fetched": ["gaming", "music", "entertainment"],
        "quota_used_today": 192,
        "nested": {"ratio": 0.25, "flags": [True, False, None], "deep": {"x": "y"}},
        "window": [1, 2],
        "as_of": "2026-01-01T00:00:00+00:00",
    }
    # What the server added is exposed on the result.
    assert result.quality_level in {"EXCELLENT", "GOOD", "DEGRADED", "POOR", "FAILED"}
    assert result.overall_score == pytest.approx(execution.scores.overall)
    assert set(result.reasons) == {"reliability", "performance", "data_quality", "resource_efficiency"}


def test_unset_optional_fields_stay_absent(client, query):
    name = unique_name("sparse")
    report = runwarden.create_report(name)
    assert client.submit(report) is not None
    (stored,) = list_executions(query, name)
    r = stored.report
    assert r.outcome == report_pb2.OUTCOME_SUCCESS  # no outcome and no error: SUCCESS
    for field in (
        "newest_record_age_seconds",
        "expected_fields_present",
        "api_quota_remaining",
        "cache_ttl_seconds",
    ):
        assert not r.data_verification.HasField(field), field
    assert not r.resource_metrics.HasField("memory_peak_mb")
    assert not r.resource_metrics.HasField("cpu_percent_avg")
    assert not r.dependency_metrics.HasField("upstream_data_age_seconds")
    assert not r.HasField("custom_metrics") or not r.custom_metrics.fields


def test_the_python_era_example(default_client_env, query):
    from runwarden import ExecutionOutcome, create_report, submit_execution_report

    name = unique_name("youtube_worker")
    report = create_report(name)
    report.data_verification.records_fetched = 200
    report.data_verification.records_processed = 195
    report.data_verification.records_failed = 5
    report.data_verification.api_calls_made = 4
    report.data_verification.api_calls_succeeded = 4
    report.data_verification.cache_writes = 4
    report.resource_metrics.memory_peak_mb = 128
    report.resource_metrics.redis_operations = 12
    report.custom_metrics = {
        "categories_fetched": ["gaming", "music", "entertainment"],
        "quota_used_today": 192,
    }
    report.outcome = ExecutionOutcome.SUCCESS
    report.completed_at = datetime.now(timezone.utc)
    result = submit_execution_report(report)

    assert result is not None
    assert result.execution_id == report.execution_id
    assert result.quality_level == "EXCELLENT"
    assert 90 <= result.overall_score <= 100
    assert "records_failed 5/200 (-1.0)" in result.reasons["data_quality"]
    assert "records_failed 5/200 (-1.0)" in result.all_reasons
    (stored,) = list_executions(query, name)
    assert stored.report.data_verification.records_failed == 5


OUTCOMES = [
    (ExecutionOutcome.SUCCESS, report_pb2.OUTCOME_SUCCESS),
    (ExecutionOutcome.PARTIAL, report_pb2.OUTCOME_PARTIAL),
    (ExecutionOutcome.FAILED, report_pb2.OUTCOME_FAILED),
    (ExecutionOutcome.TIMEOUT, report_pb2.OUTCOME_TIMEOUT),
    (ExecutionOutcome.SKIPPED, report_pb2.OUTCOME_SKIPPED),
    ("partial", report_pb2.OUTCOME_PARTIAL),
    ("OUTCOME_TIMEOUT", report_pb2.OUTCOME_TIMEOUT),
    ("Skipped", report_pb2.OUTCOME_SKIPPED),
    (3, report_pb2.OUTCOME_FAILED),
]


@pytest.mark.parametrize("outcome,expected", OUTCOMES, ids=[str(o[0]) for o in OUTCOMES])
def test_outcome_mapping(client, query, outcome, expected):
    name = unique_name("outcome")
    report = runwarden.create_report(name)
    report.outcome = outcome
    assert client.submit(report) is not None
    (stored,) = list_executions(query, name)
    assert stored.report.outcome == expected


def test_outcome_defaults(client, query):
    failed = unique_name("quick_failed")
    assert client.quick_report(failed, success=False, duration_ms=10) is not None
    assert list_executions(query, failed)[0].report.outcome == report_pb2.OUTCOME_FAILED

    errored = unique_name("errored")
    report = runwarden.create_report(errored)
    report.error_message = "disk full"  # no outcome but an error: FAILED
    assert client.submit(report) is not None
    assert list_executions(query, errored)[0].report.outcome == report_pb2.OUTCOME_FAILED

    assert [m.name for m in ExecutionOutcome] == ["SUCCESS", "PARTIAL", "FAILED", "TIMEOUT", "SKIPPED"]
    assert ExecutionOutcome.parse("outcome_partial") is ExecutionOutcome.PARTIAL
    with pytest.raises(ValueError):
        ExecutionOutcome.parse("bogus")


def test_duplicate_resubmission(client, query):
    name = unique_name("dup")
    report = runwarden.create_report(name)
    report.data_verification.records_processed = 5
    first = client.submit(report)
    second = client.submit(report)
    assert first is not None and second is not None
    assert first.duplicate is False
    assert second.duplicate is True
    assert second.execution_id == first.execution_id == report.execution_id
    assert second.overall_score == first.overall_score
    assert len(list_executions(query, name)) == 1


def test_invalid_report_is_logged_not_raised(client, query, rw_log):
    report = runwarden.create_report("bad name!")
    report.data_verification.records_failed = -3

    assert client.submit(report) is None  # no exception by default

    errors = [r for r in rw_log.records if r.name == "runwarden" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "INVALID_ARGUMENT" in message and report.execution_id in message
    assert "worker_name:" in message  # from google.rpc.BadRequest field violations
    assert "data_verification.records_failed:" in message
    assert not [r for r in rw_log.records if "retry" in r.getMessage()]  # never retried


def test_invalid_report_raises_with_raise_errors(server):
    strict = runwarden.Client(addr=server.addr, raise_errors=True)
    report = runwarden.create_report("bad name!")
    report.data_verification.records_failed = -3
    with pytest.raises(runwarden.InvalidReportError) as info:
        strict.submit(report)
    error = info.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.execution_id == report.execution_id
    fields = [v.field for v in error.violations]
    assert "worker_name" in fields and "data_verification.records_failed" in fields
    assert all(v.description for v in error.violations)
    strict.close()


def test_unencodable_value_is_logged_or_raised(server, rw_log):
    report = runwarden.create_report(unique_name("typo"))
    report.data_verification.records_fetched = "many"  # type: ignore[assignment]
    lenient = runwarden.Client(addr=server.addr)
    assert lenient.submit(report) is None
    assert any("data_verification.records_fetched" in r.getMessage() for r in rw_log.records)

    report.data_verification.records_fetched = 1
    report.outcome = "exploded"  # type: ignore[assignment]
    with pytest.raises(runwarden.InvalidReportError) as info:
        runwarden.Client(addr=server.addr, raise_errors=True).submit(report)
    assert info.value.violations[0].field == "outcome"


def test_long_error_message_is_truncated_to_the_server_limit(client, query):
    name = unique_name("long_error")
    report = runwarden.create_report(name)
    report.outcome = ExecutionOutcome.FAILED
    report.error_message = "é" * 10_000  # 20,000 bytes of UTF-8
    assert client.submit(report) is not None
    (stored,) = list_executions(query, name)
    assert len(stored.report.error_message.encode("utf-8")) == 8192


def test_inconsistent_duration_is_reconciled(client, query, rw_log):
    name = unique_name("reconcile")
    report = runwarden.create_report(name)
    report.completed_at = datetime.now(timezone.utc)
    report.started_at = report.completed_at - timedelta(seconds=60)
    report.duration_ms = 2000  # the worker's own measurement of the work, disagreeing by 58 s
    assert client.submit(report) is not None
    (stored,) = list_executions(query, name)
    assert stored.report.duration_ms == 2000
    assert any("disagrees" in r.getMessage() for r in rw_log.records)
