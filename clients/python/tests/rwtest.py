"""Test helpers: start a real runwarden server (the repository's binary), query what it stored."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, List, Optional, Union

import grpc

from runwarden.v1 import query_service_pb2, query_service_pb2_grpc

TESTS_DIR = Path(__file__).resolve().parent
# tests/ -> clients/python/ -> clients/ -> repository root
REPO_ROOT = TESTS_DIR.parents[2]


def runwarden_binary() -> Path:
    """``$RUNWARDEN_BIN``, else ``$CARGO_TARGET_DIR/debug/runwarden``, else
    ``<repo root>/target/debug/runwarden``."""
    explicit = os.environ.get("RUNWARDEN_BIN")
    if explicit:
        return Path(explicit).resolve()
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target_dir).resolve() if target_dir else REPO_ROOT / "target"
    return base / "debug" / "runwarden"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_name(prefix: str) -> str:
    return "{}_{}".format(prefix, uuid.uuid4().hex[:10])


class RunwardenServer:
    """One ``runwarden serve`` process on a SQLite file in ``workdir``."""

    #: How long to wait for a binary that is being rebuilt (it may briefly be missing).
    BINARY_WAIT = 30.0
    READY_WAIT = 20.0

    def __init__(self, workdir: Path, listen: str = "127.0.0.1:0") -> None:
        self.workdir = workdir
        self.listen = listen
        self.addr = ""
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self._lines: List[str] = []
        self._ready = threading.Event()
        self._reader: Optional[threading.Thread] = None

    def _spawn(self) -> "subprocess.Popen[bytes]":
        binary = runwarden_binary()
        database = "sqlite://{}?mode=rwc".format(self.workdir / "runwarden.db")
        cmd = [
            str(binary),
            "serve",
            "--listen",
            self.listen,
            "--database",
            database,
            "--log-format",
            "json",
            "--sqlite-synchronous",
            "normal",
        ]
        env = dict(os.environ, RUST_LOG="info")
        deadline = time.monotonic() + self.BINARY_WAIT
        while True:
            try:
                with open(self.workdir / "stderr.log", "ab") as stderr:
                    return subprocess.Popen(
                        cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env
                    )
            except OSError as exc:
                retriable = exc.errno in (errno.ENOENT, errno.ETXTBSY, errno.EACCES)
                if not retriable or time.monotonic() > deadline:
                    raise RuntimeError(
                        "cannot start runwarden at {} ({}); build it with `cargo build` or set "
                        "RUNWARDEN_BIN".format(binary, exc)
                    ) from exc
                time.sleep(0.5)

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._lines.append(line)
            if not self._ready.is_set():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("message") == "runwarden ready" and entry.get("addr"):
                    self.addr = str(entry["addr"])
                    self._ready.set()

    def start(self) -> "RunwardenServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self._spawn()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.READY_WAIT
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                stderr = (self.workdir / "stderr.log").read_text(errors="replace")
                raise RuntimeError(
                    "runwarden did not become ready (exit {}):\nstdout:\n{}\nstderr:\n{}".format(
                        self.proc.returncode, "\n".join(self._lines), stderr
                    )
                )
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def list_executions(
    addr_or_stub: Union[str, query_service_pb2_grpc.QueryServiceStub], worker_name: str
) -> List[Any]:
    """Every stored execution of ``worker_name``, newest first (via QueryService.ListExecutions)."""
    if isinstance(addr_or_stub, str):
        with grpc.insecure_channel(addr_or_stub) as channel:
            return list_executions(query_service_pb2_grpc.QueryServiceStub(channel), worker_name)
    response = addr_or_stub.ListExecutions(
        query_service_pb2.ListExecutionsRequest(worker_name=worker_name, limit=500), timeout=10
    )
    return list(response.executions)
