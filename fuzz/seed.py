#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target under fuzz/corpus/<target>/.

The seeds are small, hand-made, mostly valid inputs, so each target starts from the shapes the
server really accepts and the fuzzer mutates from there. The protobuf is encoded by hand below
(no protobuf package needed); field numbers follow proto/runwarden/v1/*.proto.

Re-running it resets each corpus directory to exactly these seeds (local fuzzing without a
scratch corpus directory adds files to corpus/<target>/; CI fuzzes a copy). Usage:

    python3 fuzz/seed.py
"""

import base64
import gzip
import json
import shutil
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"

# The fuzz targets' fixed receive time (runwarden_fuzz::now): 2026-09-21T14:13:20Z.
NOW = 1_790_000_000


# --- protobuf wire format -------------------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 / enum values are ten-byte two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def int_field(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def double_field(number: int, value: float) -> bytes:
    return key(number, 1) + struct.pack("<d", value)


def bytes_field(number: int, value: bytes) -> bytes:
    return key(number, 2) + varint(len(value)) + value


def str_field(number: int, value: str) -> bytes:
    return bytes_field(number, value.encode())


def msg(number: int, *fields: bytes) -> bytes:
    return bytes_field(number, b"".join(fields))


def timestamp(number: int, seconds: int, nanos: int = 0) -> bytes:
    return msg(number, int_field(1, seconds), *([int_field(2, nanos)] if nanos else []))


def value(v) -> bytes:
    """google.protobuf.Value's content for a Python value."""
    if v is None:
        return int_field(1, 0)
    if isinstance(v, bool):
        return int_field(4, int(v))
    if isinstance(v, (int, float)):
        return double_field(2, float(v))
    if isinstance(v, str):
        return str_field(3, v)
    if isinstance(v, dict):
        return bytes_field(5, struct_(v))
    if isinstance(v, list):
        return bytes_field(6, b"".join(bytes_field(1, value(item)) for item in v))
    raise TypeError(v)


def struct_(d: dict) -> bytes:
    """google.protobuf.Struct's content: map<string, Value> fields = 1."""
    return b"".join(msg(1, str_field(1, k), bytes_field(2, value(v))) for k, v in d.items())


CUSTOM = {"batch": "2026-09-21", "shards": 4, "ratio": 0.25, "dry_run": False, "note": None,
          "per_shard": [12, 40, {"slow": True}], "nested": {"a": {"b": [1, 2, 3]}}}


def minimal_report() -> bytes:
    return (str_field(1, "analytics_flush_worker") + int_field(6, 5000) + int_field(7, 1))


def full_report() -> bytes:
    data_verification = (
        int_field(1, 150) + int_field(2, 150) + int_field(3, 148) + int_field(4, 2) + int_field(5, 0)
        + double_field(6, 12.5) + double_field(7, 3600.0) + double_field(8, 900.25)
        + int_field(9, 0) + str_field(10, "email") + str_field(10, "country")
        + msg(11, str_field(1, "phone"), int_field(2, 7)) + msg(11, str_field(1, "zip"), int_field(2, 0))
        + int_field(12, 40) + int_field(13, 1) + str_field(14, "row 17: bad date")
        + int_field(15, 10) + int_field(16, 9) + int_field(17, 1) + int_field(18, 1) + int_field(19, 4990)
        + int_field(20, 80) + int_field(21, 20) + int_field(22, 20) + int_field(23, 300)
    )
    resources = (double_field(1, 512.0) + double_field(2, 87.5) + int_field(3, 1_048_576)
                 + int_field(4, 33) + int_field(5, 120))
    dependencies = double_field(1, 60.0) + int_field(2, 3)
    return (
        str_field(1, "intel.enrich:v2")
        + str_field(2, "0192f0c4-5b7e-7c3a-9a51-1f2d3c4b5a69")
        + str_field(3, "intel")
        + timestamp(4, NOW - 1000, 250_000_000)
        + timestamp(5, NOW - 995, 250_000_000)
        + int_field(6, 5000)
        + int_field(7, 2)
        + str_field(8, "2 records failed validation")
        + bytes_field(9, data_verification)
        + bytes_field(10, resources)
        + bytes_field(11, dependencies)
        + bytes_field(12, struct_(CUSTOM))
    )


def timestamps_only_report() -> bytes:
    return (str_field(1, "cron.nightly-export") + timestamp(4, NOW - 7200) + timestamp(5, NOW - 3600)
            + int_field(7, 3) + str_field(8, "upstream timed out"))


def invalid_report() -> bytes:
    """Breaks several rules at once: bad name, unknown outcome, negative counts, NaN, future time."""
    return (str_field(1, "bad name!") + str_field(2, "not-a-uuid") + timestamp(5, NOW + 86_400)
            + int_field(6, -1) + int_field(7, 99)
            + msg(9, int_field(1, -5), double_field(6, float("nan")))
            + msg(10, double_field(2, 1e9)))


def request(report: bytes) -> bytes:
    """SubmitReportRequest { report = 1 }."""
    return bytes_field(1, report)


def batch(*reports: bytes) -> bytes:
    """SubmitReportBatchRequest { repeated reports = 1 }."""
    return b"".join(bytes_field(1, r) for r in reports)


def frame(message: bytes, flags: int = 0) -> bytes:
    """A gRPC / grpc-web length-prefixed frame."""
    return bytes([flags]) + struct.pack(">I", len(message)) + message


# --- JSON (proto3 JSON mapping, as the REST shim reads it) ---------------------------------------

JSON_MINIMAL = {"worker_name": "analytics_flush_worker", "outcome": "OUTCOME_SUCCESS", "duration_ms": 5000}
JSON_FULL = {
    "worker_name": "intel.enrich:v2",
    "execution_id": "0192f0c4-5b7e-7c3a-9a51-1f2d3c4b5a69",
    "worker_type": "intel",
    "started_at": "2026-09-21T13:56:40.250Z",
    "completed_at": "2026-09-21T13:56:45.250Z",
    "duration_ms": "5000",
    "outcome": "OUTCOME_PARTIAL",
    "error_message": "2 records failed validation",
    "data_verification": {
        "records_fetched": 150, "records_processed": "150", "records_stored": 148, "records_failed": 2,
        "newest_record_age_seconds": 12.5, "oldest_record_age_seconds": "3600",
        "expected_fields_present": False, "missing_fields": ["email", "country"],
        "null_field_counts": {"phone": "7", "zip": 0},
        "validation_checks_passed": 40, "validation_checks_failed": 1,
        "validation_errors": ["row 17: bad date"],
        "api_calls_made": 10, "api_rate_limited": True, "api_quota_remaining": 4990,
        "cache_hits": 80, "cache_misses": 20, "cache_ttl_seconds": 300,
    },
    "resource_metrics": {"memory_peak_mb": 512, "cpu_percent_avg": 87.5, "network_bytes_received": "1048576"},
    "dependency_metrics": {"upstream_data_age_seconds": 60, "downstream_consumers_waiting": 3},
    "custom_metrics": CUSTOM,
}
JSON_ODD = {  # legal but unusual spellings: numeric enum, camelCase names, special doubles
    "workerName": "w", "outcome": 3, "durationMs": "0",
    "dataVerification": {"avgRecordAgeSeconds": "Infinity", "newestRecordAgeSeconds": "NaN"},
    "customMetrics": {}, "startedAt": "1970-01-01T00:00:00Z",
}
JSON_WORKER = {"worker_type": "analytics", "expected_interval": "*/15 * * * MON-FRI", "grace_seconds": "300",
               "owner": "data-platform", "description": "flushes the analytics buffer",
               "labels": {"team": "data", "tier": "1"}, "paused": False}
JSON_WORKER_INTERVAL = {"worker_name": "analytics_flush_worker", "expected_interval": "3600", "paused": True}


def token(text: str) -> str:
    """What page_token's encode produces: base64url without padding."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def seeds() -> dict[str, dict[str, bytes]]:
    minimal, full = request(minimal_report()), request(full_report())
    return {
        "report_protobuf": {
            "minimal": minimal,
            "full": full,
            "timestamps_only": request(timestamps_only_report()),
            "invalid": request(invalid_report()),
        },
        "rest_json": {
            "report_minimal.json": json.dumps(JSON_MINIMAL).encode(),
            "report_full.json": json.dumps(JSON_FULL, indent=1).encode(),
            "report_odd.json": json.dumps(JSON_ODD).encode(),
            "batch.json": json.dumps({"reports": [JSON_MINIMAL, JSON_FULL]}).encode(),
            "worker_cron.json": json.dumps(JSON_WORKER).encode(),
            "worker_interval.json": json.dumps(JSON_WORKER_INTERVAL).encode(),
        },
        # Byte 0 even: the rest is the token; odd: the rest is the text inside the token.
        "page_token": {
            "execution": b"\x00" + token("e1:1789999000250000:42").encode(),
            "execution_negative": b"\x00" + token("e1:-1:-9223372036854775808").encode(),
            "worker": b"\x00" + token("w1:analytics_flush_worker").encode(),
            "worker_colon": b"\x00" + token("w1:intel.enrich:v2").encode(),
            "anomaly": b"\x00" + token("a1:17").encode(),
            "execution_text": b"\x01e1:1789999000250000:42",
            "worker_text": b"\x01w1:analytics_flush_worker",
            "anomaly_text": b"\x01a1:9223372036854775807",
        },
        "cron": {
            "daily": b"0 3 * * *",
            "weekdays": b"*/15 * * * MON-FRI",
            "lists_steps": b"5,10-20/3 */2 1-15 JAN-JUN,DEC 0-7",
            "vixie_or": b"0 0 13 * FRI",
            "leap_day": b"0 0 29 2 *",
            "never": b"0 0 30 2 *",
            "hourly": b"@hourly",
            "step_from": b"7/10 9-17 * * sun,sat",
            "seconds": b"3600",
        },
        # Byte 0: content type (bits 0-1), method (bits 2-3), gzip (bit 4); byte 1: chunk size.
        "grpc_web": {
            "proto_minimal": b"\x00\x00" + frame(minimal),
            "proto_full_chunked": b"\x00\x07" + frame(full),
            "proto_with_trailers": b"\x00\x00" + frame(minimal) + frame(b"grpc-status:0\r\n", 0x80),
            "text_minimal": b"\x01\x00" + frame(minimal),
            "text_raw_chunked": b"\x02\x05" + base64.b64encode(frame(full)),
            "grpc_h2_minimal": b"\x03\x00" + frame(minimal),
            "proto_batch": b"\x04\x00" + frame(batch(minimal_report(), full_report(), invalid_report())),
            "proto_stream": b"\x08\x00" + frame(minimal) + frame(full) + frame(request(invalid_report())),
            "proto_gzip": b"\x10\x00" + frame(gzip.compress(full, mtime=0), 0x01),
        },
    }


def main() -> None:
    for target, files in seeds().items():
        directory = CORPUS / target
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for name, content in files.items():
            (directory / name).write_bytes(content)
        print(f"{directory.relative_to(CORPUS.parent.parent)}: {len(files)} seeds")


if __name__ == "__main__":
    main()
