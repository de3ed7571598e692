"""Generated gRPC stubs for the ``runwarden.v1`` protos (built by setup.py, not committed).

``report_pb2``, ``analysis_pb2``, ``report_service_pb2(_grpc)`` and ``query_service_pb2(_grpc)``.
"""
