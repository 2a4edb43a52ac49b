"""EdgeSync over raw gRPC: what any device client (in any language) sees."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from shelfrank.proto._generated import edge_sync_pb2 as edge_pb
from shelfrank.proto._generated import edge_sync_pb2_grpc as edge_grpc
from shelfrank.server.app import ServerOptions, start
from tests.conftest import SERVER_CONFIG


def test_snapshot_stream_auth_and_validation(toy_model_dir: Path, tmp_path: Path) -> None:
    running = start(
        ServerOptions(
            state_dir=tmp_path,
            port=0,
            model_dir=toy_model_dir,
            token="tok",
            train_config=SERVER_CONFIG,
        )
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = edge_grpc.EdgeSyncStub(channel)
            with pytest.raises(grpc.RpcError) as denied:
                list(stub.GetSnapshot(edge_pb.GetSnapshotRequest(user_id="u0")))
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            auth = [("authorization", "Bearer tok")]
            with pytest.raises(grpc.RpcError) as invalid:
                list(stub.GetSnapshot(edge_pb.GetSnapshotRequest(user_id=""), metadata=auth))
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "user_id" in invalid.value.details()
            parts = list(stub.GetSnapshot(edge_pb.GetSnapshotRequest(user_id="u0"), metadata=auth))
            header = parts[0].header
            payload = b"".join(p.data for p in parts[1:])
            assert header.base_version == ""
            assert header.payload_bytes == len(payload) > 0
            manifest = json.loads(header.manifest_json)
            assert manifest["format"] == "shelfrank-edge-snapshot"
            assert manifest["items"] == 32
            again = list(
                stub.GetSnapshot(
                    edge_pb.GetSnapshotRequest(user_id="u0", have_version=header.version),
                    metadata=auth,
                )
            )
            assert again[0].header.base_version == header.version  # a delta, here an empty one
            assert again[0].header.payload_bytes < header.payload_bytes
    finally:
        running.stop()
