"""Imports the generated stubs with a helpful message when they were never generated."""

from __future__ import annotations

try:
    from ._rpc import status_pb2
    from .v1 import (
        analysis_pb2,
        query_service_pb2,
        query_service_pb2_grpc,
        report_pb2,
        report_service_pb2,
        report_service_pb2_grpc,
    )
except ImportError as exc:  # pragma: no cover - only in an unbuilt source checkout
    raise ImportError(
        "runwarden's generated gRPC stubs are missing ({}). They are generated from the "
        "repository's proto/ directory when the package is built: install it with "
        "`pip install ./clients/python` (or `pip install -e ./clients/python`).".format(exc)
    ) from exc

__all__ = [
    "analysis_pb2",
    "query_service_pb2",
    "query_service_pb2_grpc",
    "report_pb2",
    "report_service_pb2",
    "report_service_pb2_grpc",
    "status_pb2",
]
