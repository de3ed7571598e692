"""Fixtures: a real runwarden server started from the repository's binary, query stubs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator, List

import grpc
import pytest

import runwarden
from runwarden.v1 import query_service_pb2_grpc
from rwtest import RunwardenServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunwardenServer]:
    srv = RunwardenServer(tmp_path_factory.mktemp("runwarden")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunwardenServer]]:
    """Factory for extra servers owned by one test: ``start_server(listen)`` → started server."""
    started: List[RunwardenServer] = []

    def factory(listen: str = "127.0.0.1:0") -> RunwardenServer:
        srv = RunwardenServer(tmp_path / "srv{}".format(len(started)), listen)
        started.append(srv)
        return srv.start()

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def query_channel(server: RunwardenServer) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(server.addr)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def query(query_channel: grpc.Channel) -> query_service_pb2_grpc.QueryServiceStub:
    return query_service_pb2_grpc.QueryServiceStub(query_channel)


@pytest.fixture
def client(server: RunwardenServer) -> Iterator[runwarden.Client]:
    c = runwarden.Client(addr=server.addr, timeout=5.0, retries=2, backoff_base=0.05)
    yield c
    c.close()


@pytest.fixture
def default_client_env(server: RunwardenServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points the module-level API (default client) at the test server through the environment."""
    monkeypatch.setenv("RUNWARDEN_ADDR", server.addr)
    monkeypatch.delenv("RUNWARDEN_TOKEN", raising=False)
    runwarden.reset_default_client()
    yield server.addr
    runwarden.reset_default_client()


@pytest.fixture
def rw_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="runwarden")
    return caplog
