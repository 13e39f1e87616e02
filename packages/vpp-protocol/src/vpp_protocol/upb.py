"""Private upb (google protobuf) classes of the same schema, behind the ``[upb]`` extra.

For the headend's telemetry hot path (decoding ~10x faster than the dataclasses, no
per-reading objects) and for gRPC server reflection descriptors. Gateways never import
this module. Not a general public API: the dataclasses in `vpp_protocol` are.
"""

from __future__ import annotations

try:
    from ._upb.vpp.agent.v1 import agent_pb2 as pb
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "vpp_protocol.upb needs google protobuf: pip install 'vpp-protocol[upb]'"
    ) from exc

#: The FileDescriptor of vpp/agent/v1/agent.proto, registered in protobuf's default pool.
FILE_DESCRIPTOR = pb.DESCRIPTOR

__all__ = ["FILE_DESCRIPTOR", "pb"]
