"""The client against a server that requires tokens: a report:write token (from
``$RUNWARDEN_TOKEN`` or ``token=``) is sent as ``authorization: Bearer``; a missing or
wrong-prefix token is refused with the server's reason, and nothing is stored."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

import runwarden
from runwarden.v1 import query_service_pb2, query_service_pb2_grpc
from rwtest import RunwardenServer, runwarden_binary, unique_name


def create_token(workdir: Path, *args: str) -> str:
    database = "sqlite://{}?mode=rwc".format(workdir / "runwarden.db")
    out = subprocess.run(
        [str(runwarden_binary()), "token", "create", "--database", database, *args],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def secured(tmp_path: Path):
    workdir = tmp_path / "secured"
    workdir.mkdir()
    tokens = {
        "write": create_token(workdir, "--name", "etl", "--scope", "report:write", "--worker-prefix", "etl_"),
        "read": create_token(workdir, "--name", "reader", "--scope", "read"),
    }
    srv = RunwardenServer(workdir).start()
    try:
        yield srv, tokens
    finally:
        srv.stop()


def test_a_write_token_reports_for_its_workers(secured, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, tokens = secured
    name = unique_name("etl_job")
    monkeypatch.setenv("RUNWARDEN_TOKEN", tokens["write"])
    with runwarden.Client(srv.addr, raise_errors=True) as client:
        result = client.quick_report(name, success=True, duration_ms=100)
    assert result is not None and not result.duplicate
    with runwarden.Client(srv.addr, token=tokens["write"], raise_errors=True) as client:
        with pytest.raises(runwarden.RunwardenError) as refused:
            client.quick_report(unique_name("billing_job"), success=True, duration_ms=100)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED, refused.value
    assert "etl_" in str(refused.value)
    # Stored for its own worker, visible with a read token; a query without one is refused.
    with grpc.insecure_channel(srv.addr) as channel:
        stub = query_service_pb2_grpc.QueryServiceStub(channel)
        request = query_service_pb2.ListExecutionsRequest(worker_name=name, limit=10)
        found = stub.ListExecutions(request, metadata=(("authorization", "Bearer " + tokens["read"]),), timeout=10)
        assert len(found.executions) == 1
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ListExecutions(request, timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_without_a_token_the_report_is_refused_and_logged(secured, monkeypatch, caplog) -> None:
    srv, _ = secured
    monkeypatch.delenv("RUNWARDEN_TOKEN", raising=False)
    name = unique_name("etl_job")
    with runwarden.Client(srv.addr, retries=0) as client:
        assert client.quick_report(name, success=True, duration_ms=100) is None
    assert any("token" in record.getMessage() for record in caplog.records), caplog.text
    assert tokens_never_logged(caplog.text, secured[1])


def tokens_never_logged(text: str, tokens: dict) -> bool:
    return all(token not in text for token in tokens.values())
