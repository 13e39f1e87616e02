"""The one keepalive configuration both ends of the agent stream use."""

from __future__ import annotations

from vpp_protocol.keepalive import keepalive_config


def test_pings_are_sent_at_the_keepalive_time_even_without_data() -> None:
    config = keepalive_config(20.0, 5.0)
    assert config._keepalive_time == 20.0
    assert config._keepalive_timeout == 5.0
    assert config._keepalive_permit_without_calls is True
    # grpclib's defaults (2 pings without data, 300 s between them) would suppress them.
    assert config._http2_max_pings_without_data == 0
    assert config._http2_min_sent_ping_interval_without_data == 20.0
    assert config.ssl_target_name_override is None


def test_a_client_may_name_the_tls_server() -> None:
    assert keepalive_config(
        1.0, 1.0, ssl_target_name_override="headend"
    ).ssl_target_name_override == ("headend")
