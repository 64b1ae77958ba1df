"""Where a webhook may be sent: public addresses only, unless the operator allows a network.

An endpoint's URL is checked when it is registered or changed, and its addresses again at every attempt
(a name can be pointed elsewhere later, "DNS rebinding"): the dispatcher's resolver drops every address
that is not allowed, so a connection is made only to an allowed one.
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp

from kernel.errors import InvalidArgument

MAX_URL_LENGTH = 2048
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Exception):
    """The URL's host is, or resolves to, an address that is not allowed."""


def networks(cidrs: tuple[str, ...]) -> tuple[_Network, ...]:
    """WEBHOOK_ALLOWED_NETWORKS, parsed once when the service starts."""
    try:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
    except ValueError as error:
        raise SystemExit(f"WEBHOOK_ALLOWED_NETWORKS: {error}") from None


def allowed(address: _Address, allowed_networks: tuple[_Network, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in allowed_networks):
        return True
    # is_global excludes loopback, private, link-local, shared (100.64/10), reserved and unspecified ranges.
    return address.is_global and not address.is_multicast


def _url_violation(description: str, reason: str) -> InvalidArgument:
    return InvalidArgument.field("endpoint.url", description, reason=reason)


def check_url_form(url: str, allow_plain_http: bool) -> tuple[str, int]:
    """The URL's host and port, or the rule it breaks."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise _url_violation(f"must be a URL of 1 to {MAX_URL_LENGTH} characters", "INVALID_WEBHOOK_URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _url_violation("must be a valid http(s) URL", "INVALID_WEBHOOK_URL") from None
    schemes = ("https", "http") if allow_plain_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise _url_violation(f"must be an absolute {' or '.join(schemes)} URL with a host", "INVALID_WEBHOOK_URL")
    if parts.username or parts.password:
        raise _url_violation("must not carry credentials (they would be logged)", "INVALID_WEBHOOK_URL")
    if parts.fragment:
        raise _url_violation("must not have a #fragment", "INVALID_WEBHOOK_URL")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target(url: str, allow_plain_http: bool, allowed_networks: tuple[_Network, ...]) -> None:
    """Refuses a URL whose host is, or resolves to, an address that is not allowed (every address it
    resolves to must be)."""
    host, port = check_url_form(url, allow_plain_http)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise _url_violation(f"names a host that does not resolve: {host[:100]}", "WEBHOOK_HOST_UNKNOWN") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    refused = [a for a in addresses if not allowed(a, allowed_networks)]
    if refused:
        raise _url_violation(
            f"points at {refused[0]}, a loopback, private, link-local or otherwise non-public address; an "
            "operator can allow its network with WEBHOOK_ALLOWED_NETWORKS",
            "WEBHOOK_TARGET_NOT_ALLOWED",
        )


def check_literal(host: str, allowed_networks: tuple[_Network, ...]) -> None:
    """At an attempt: a host given as an address is not resolved (aiohttp connects to it directly)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not allowed(address, allowed_networks):
        raise TargetRefused(f"{address} is not an allowed address")


class GuardedResolver(aiohttp.ThreadedResolver):
    """Resolves as usual, then keeps only allowed addresses; none left refuses the attempt."""

    def __init__(self, allowed_networks: tuple[_Network, ...]):
        super().__init__()
        self.allowed_networks = allowed_networks

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        results = await super().resolve(host, port, family)
        kept = [r for r in results if allowed(ipaddress.ip_address(r["host"]), self.allowed_networks)]
        if not kept:
            raise TargetRefused(f"{host[:100]} resolves only to addresses that are not allowed")
        return kept
