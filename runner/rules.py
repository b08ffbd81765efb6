"""Payload rules that the controller (at claim) and the runner (before and while it works) both
apply, so one row never gets two verdicts: which addresses a job may fetch from, and which
input paths stay inside the output location.

Addresses: a job fetches a URL a person typed into the web app, from inside the cluster, so
everything that is not the public internet is refused — loopback, link-local (cloud metadata),
private, carrier-grade NAT, unspecified, multicast, reserved, and the cluster's own networks —
unless the operator allows it (`AUDIOJOB_ALLOWED_NETWORKS`, chart value
`runner.allowedNetworks`). The controller can refuse only literal addresses (it resolves no
names); the runner checks every address it actually connects to (`runner/guard.py`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

ENV_ALLOWED_NETWORKS = "AUDIOJOB_ALLOWED_NETWORKS"
"""Comma-separated CIDRs, addresses and host:port a job may fetch from despite the rules."""
ENV_CLUSTER_NETWORKS = "AUDIOJOB_CLUSTER_NETWORKS"
"""Comma-separated CIDRs (the cluster's pod and service ranges) refused like private ones."""
CHART_ALLOWED_NETWORKS = "runner.allowedNetworks"

_N = ipaddress.ip_network
REFUSED_NETWORKS: tuple[tuple[Network, str], ...] = (
    (_N("0.0.0.0/8"), "an unspecified address"),
    (_N("10.0.0.0/8"), "a private address"),
    (_N("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_N("127.0.0.0/8"), "a loopback address"),
    (_N("169.254.0.0/16"), "a link-local address (where cloud metadata services answer)"),
    (_N("172.16.0.0/12"), "a private address"),
    (_N("192.0.0.0/24"), "a reserved address"),
    (_N("192.0.2.0/24"), "a reserved (documentation) address"),
    (_N("192.168.0.0/16"), "a private address"),
    (_N("198.18.0.0/15"), "a reserved (benchmarking) address"),
    (_N("198.51.100.0/24"), "a reserved (documentation) address"),
    (_N("203.0.113.0/24"), "a reserved (documentation) address"),
    (_N("224.0.0.0/4"), "a multicast address"),
    (_N("240.0.0.0/4"), "a reserved address"),
    (_N("::/128"), "an unspecified address"),
    (_N("::1/128"), "a loopback address"),
    (_N("64:ff9b:1::/48"), "a private (local NAT64) address"),
    (_N("100::/64"), "a reserved (discard) address"),
    (_N("2001::/23"), "a reserved (IETF protocol) address"),
    (_N("2001:db8::/32"), "a reserved (documentation) address"),
    (_N("fc00::/7"), "a private (unique local) address"),
    (_N("fe80::/10"), "a link-local address"),
    (_N("fec0::/10"), "a reserved (site-local) address"),
    (_N("ff00::/8"), "a multicast address"),
)
"""Never fetched from unless allowed; also the `except` list of the chart's egress policy.
IPv4-mapped, NAT64 and 6to4 addresses are judged by the IPv4 address inside (`unwrap`)."""

_NAT64 = _N("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NUMERIC_V4 = re.compile(r"[0-9a-fx.]+")


def unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64 or 6to4 address; others unchanged."""
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.scope_id:
            return IPv6Address(str(ip).split("%", 1)[0])
    return ip


def literal_address(host: str) -> IPAddress | None:
    """The address a host names without DNS, in every spelling the resolver accepts
    (`2130706433`, `0x7f.1`, `0177.0.0.1`, `[::ffff:127.0.0.1]`), and `localhost`."""
    h = host.strip().lower().removeprefix("[").removesuffix("]")
    if h.rstrip(".") == "localhost" or h.rstrip(".").endswith(".localhost"):
        return IPv4Address("127.0.0.1")  # RFC 6761: always loopback, whatever DNS says
    if ":" in h:
        try:
            return IPv6Address(h)
        except ValueError:
            return None
    if _NUMERIC_V4.fullmatch(h):
        try:
            # inet_aton is what getaddrinfo uses for numeric hosts: decimal, octal, hex, short.
            return IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def _entries(raw: str) -> list[str]:
    return [e.strip() for e in raw.split(",") if e.strip()]


@dataclass(frozen=True)
class NetworkRules:
    """What a job may connect to: the refused ranges, minus what the operator allows."""

    allowed: tuple[Network, ...] = ()
    allowed_endpoints: frozenset[tuple[str, int]] = frozenset()
    """(host, port) pairs; host is a lower-case name or an address in canonical form."""
    cluster: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allowed: str = "", cluster: str = "") -> NetworkRules:
        """Read the two comma-separated settings, or raise ValueError with a sentence."""
        nets: list[Network] = []
        endpoints: set[tuple[str, int]] = set()
        for entry in _entries(allowed):
            parsed = _network(entry)
            if parsed is not None:
                nets.append(parsed)
                continue
            host, sep, port = entry.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
                raise ValueError(
                    f"{ENV_ALLOWED_NETWORKS} entry {entry[:80]!r} is not a CIDR (10.1.0.0/16), "
                    "an address (10.1.2.3) or host:port (minio.storage.svc:9000)"
                )
            ip = literal_address(host) if not host.rstrip(".").endswith("localhost") else None
            endpoints.add((str(unwrap(ip)) if ip else host.lower().rstrip("."), int(port)))
        cluster_nets = []
        for entry in _entries(cluster):
            net = _network(entry)
            if net is None:
                raise ValueError(
                    f"{ENV_CLUSTER_NETWORKS} entry {entry[:80]!r} is not a CIDR (10.96.0.0/12)"
                )
            cluster_nets.append(net)
        return cls(tuple(nets), frozenset(endpoints), tuple(cluster_nets))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NetworkRules:
        env = os.environ if env is None else env
        return cls.parse(env.get(ENV_ALLOWED_NETWORKS, ""), env.get(ENV_CLUSTER_NETWORKS, ""))

    def allows_endpoint(self, host: str, port: int) -> bool:
        return (host.lower().rstrip("."), port) in self.allowed_endpoints

    def refusal(self, ip: IPAddress, port: int) -> str | None:
        """Why a connection to ip:port is refused (a phrase such as "a loopback address"),
        or None when it may go ahead."""
        ip = unwrap(ip)
        if any(ip in net for net in self.allowed) or self.allows_endpoint(str(ip), port):
            return None
        if any(ip in net for net in self.cluster):
            return f"in the cluster's networks ({ENV_CLUSTER_NETWORKS})"
        return next((reason for net, reason in REFUSED_NETWORKS if ip in net), None)


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry.removeprefix("[").removesuffix("]"), strict=False)
    except ValueError:
        return None


def url_host_port(url: str) -> tuple[str, int] | None:
    """The host and port a URL names, or None when it names none a client could use."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)


def refused_sentence(url: str, host: str, ip: IPAddress, reason: str) -> str:
    """The one sentence for a refused fetch: the URL, the address, why, and what allows it.
    `host` is the name that was connected to; when it is not the URL's own host (a redirect,
    a playlist entry) the sentence says the URL led there."""
    shown = url if len(url) <= 200 else url[:199] + "…"
    name = host.lower().strip("[]")
    ours = name == (url_host_port(url) or ("", 0))[0]
    if name == str(ip):
        where = f"{ip} is {reason}" if ours else f"it led to {ip}, {reason}"
    else:
        where = (
            f"{name} is {ip}, {reason}" if ours else f"it led to {name}, which is {ip}, {reason}"
        )
    return (
        f"refused to fetch {shown}: {where}; job pods fetch only from public addresses "
        f"(if this source is trusted, add {ip} or its network to {ENV_ALLOWED_NETWORKS}, "
        f"chart value {CHART_ALLOWED_NETWORKS})"
    )


def url_refusal(url: str, rules: NetworkRules) -> str | None:
    """The refusal sentence when a URL's host is a literal address (or `localhost`) that the
    rules refuse; None otherwise. Names are left to the runner, which resolves them."""
    found = url_host_port(url)
    if found is None:
        return None
    host, port = found
    ip = literal_address(host)
    if ip is None or rules.allows_endpoint(host, port):
        return None
    reason = rules.refusal(ip, port)
    if reason is None:
        return None
    return refused_sentence(url, host, unwrap(ip), reason)


def path_refusal(ref: str) -> str | None:
    """Why an input path could leave the output location (`..`, absolute, empty parts), or
    None when it is a plain relative key or an s3:// URL."""
    if ref.startswith("s3://"):
        return None
    if "\x00" in ref or any(part in ("", ".", "..") for part in ref.split("/")):
        return (
            f"input {ref[:200]!r} must be a relative path inside the output location "
            "(no leading /, no .. or empty parts) or an s3:// URL"
        )
    return None
