"""Does the headend's registry know this site? Asked by ``vpp-gateway check --headend-url``.

It asks the headend's REST API (``GET /sites/{site_id}``, a viewer's read), not its gRPC
port: the gRPC service has one call, Connect, and a Register there would take the session
over from a gateway of the site that is running (the headend fences the older session).
A read has no side effect on anything. With auth on, the API wants a viewer token.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Literal

RegistrationState = Literal["registered", "not_registered", "not_checked"]


@dataclass(frozen=True, slots=True)
class Registration:
    """The answer: ``registered`` (with the asset ids the registry holds for the site),
    ``not_registered``, or ``not_checked`` (``detail`` says why: unreachable, token...)."""

    state: RegistrationState
    url: str
    detail: str = ""
    asset_ids: frozenset[str] = field(default_factory=frozenset)


def check_base_url(base_url: str) -> urllib.parse.SplitResult:
    """``base_url`` split; ValueError unless it is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"--headend-url {base_url!r}: expected the headend's REST API, "
            "e.g. http://headend.example.net:8000"
        )
    return parts


def site_url(base_url: str, site_id: str) -> str:
    """``<base_url>/sites/<site_id>``; ValueError unless ``base_url`` is an http(s) URL."""
    parts = check_base_url(base_url)
    path = parts.path.rstrip("/") + "/sites/" + urllib.parse.quote(site_id, safe="")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _get(url: str, token: str | None, timeout: float) -> Registration:
    headers = {"accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # http(s): site_url
            body = resp.read(4 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        exc.close()
        return _http_error(url, exc.code, token)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Registration("not_checked", url, f"cannot reach {url}: {reason}")
    try:
        doc = json.loads(body)
        ids = frozenset(str(a) for a in doc["asset_ids"])
    except (ValueError, KeyError, TypeError):
        return Registration("not_checked", url, f"{url} did not answer as a VPP headend does")
    return Registration("registered", url, asset_ids=ids)


def _http_error(url: str, status: int, token: str | None) -> Registration:
    if status == 404:
        return Registration("not_registered", url)
    if status == 401:
        detail = (
            "the headend's REST API refused the token (401)"
            if token
            else "the headend's REST API needs a token (401): --token or VPP_GATEWAY_TOKEN "
            "(vpp-headend tokens create --role viewer)"
        )
        return Registration("not_checked", url, detail)
    if status == 403:
        return Registration("not_checked", url, "the token may not read the registry (403)")
    return Registration("not_checked", url, f"{url} answered HTTP {status}")


async def site_registration(
    base_url: str, site_id: str, *, token: str | None = None, timeout: float = 5.0
) -> Registration:
    """Whether the headend at ``base_url`` (its REST API) has ``site_id`` in its registry.

    Never raises for the network or the headend's answer (``not_checked`` says why);
    ValueError for a ``base_url`` that is not an http(s) URL.
    """
    url = site_url(base_url, site_id)
    return await asyncio.to_thread(_get, url, token, timeout)


__all__ = ["Registration", "RegistrationState", "check_base_url", "site_registration", "site_url"]
