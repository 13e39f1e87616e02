"""Connectivity check for ``vpp-gateway check``: reach the headend without starting a session.

It opens the Connect stream and ends it without sending Register, so a running gateway of
the same site is not superseded. A refused connection, a TLS failure, a missing service or
an authorization error is reported in plain words.
"""

from __future__ import annotations

import asyncio

import grpclib.const
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

import vpp_protocol as pb

from .connection import CONNECT_PATH, describe
from .settings import GatewaySettings
from .tls import client_context


async def probe_headend(settings: GatewaySettings, wait_s: float = 5.0) -> str | None:
    """None when the headend answers on AgentService.Connect, else what is wrong."""
    where = f"{settings.headend_host}:{settings.headend_port}"
    try:
        ctx = await asyncio.to_thread(client_context, settings.tls) if settings.tls else None
    except (OSError, ValueError) as exc:
        return f"cannot load TLS files: {exc}"
    channel = Channel(settings.headend_host, settings.headend_port, ssl=ctx)
    try:
        async with asyncio.timeout(wait_s):
            async with channel.request(
                CONNECT_PATH,
                grpclib.const.Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.HeadendMessage,
            ) as stream:
                await stream.send_request()
                await stream.end()
                await stream.recv_initial_metadata()
                while await stream.recv_message() is not None:
                    pass
    except TimeoutError:
        return f"no answer within {wait_s:g} s (firewall or proxy dropping traffic?)"
    except GRPCError as exc:
        if exc.status in (
            grpclib.const.Status.UNIMPLEMENTED,
            grpclib.const.Status.UNAUTHENTICATED,
            grpclib.const.Status.PERMISSION_DENIED,
        ):
            return describe(exc, where)
        return None  # the service answered: it refused an empty stream, as it should
    except Exception as exc:
        return describe(exc, where)
    finally:
        channel.close()
    return None
