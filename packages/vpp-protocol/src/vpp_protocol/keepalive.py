"""HTTP/2 keepalive for the agent stream, one grpclib `Configuration` for both ends.

The headend's `Server` and the gateway's `Channel` both build it here (not generated code).
"""

from __future__ import annotations

from grpclib.config import Configuration


def keepalive_config(
    time_s: float, timeout_s: float, *, ssl_target_name_override: str | None = None
) -> Configuration:
    """A PING every ``time_s`` on an idle connection, which ends when one is not answered
    within ``timeout_s``; ``ssl_target_name_override`` is the client's TLS server name."""
    # With only _keepalive_time set, grpclib's 300 s minimum ping interval and its limit of
    # 2 pings without data suppress the pings (docs/stack_notes.md, "grpclib 0.4.9").
    return Configuration(
        _keepalive_time=time_s,
        _keepalive_timeout=timeout_s,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=time_s,
        ssl_target_name_override=ssl_target_name_override,
    )


__all__ = ["keepalive_config"]
