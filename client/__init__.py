"""Typed Python SDK for the shelfrank gRPC service (arrives with issue 3).

Depends on grpcio/protobuf only (plus the dependency-free ``shelfrank.core.errors``).
"""
