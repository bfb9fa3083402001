"""Who may talk to the SIP port: an allow-list of source networks, checked before a byte is parsed, and a
per-source rate limit on INVITEs. Scanners find an open SIP port within minutes."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_TRACKED_SOURCES = 10_000
"""Sources remembered by the allow-list cache and the rate limiter; the least recently seen are forgotten."""


class SourceGuard:
    def __init__(
        self,
        networks: tuple[Network, ...],
        invites_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.networks = networks
        self.rate = invites_per_second
        self.burst = float(burst)
        self.clock = clock
        self.refused_sources = 0
        self.limited_invites = 0
        self._verdicts: OrderedDict[str, bool] = OrderedDict()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allowed(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._verdicts[host] = self._in_networks(host)
            if len(self._verdicts) > MAX_TRACKED_SOURCES:
                self._verdicts.popitem(last=False)
        if not verdict:
            self.refused_sources += 1
        return verdict

    def _in_networks(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def invite_allowed(self, host: str) -> bool:
        """A token bucket per source: `burst` INVITEs at once, then `invites_per_second`."""
        now = self.clock()
        tokens, since = self._buckets.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[host] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > MAX_TRACKED_SOURCES:
            self._buckets.popitem(last=False)
        if not allowed:
            self.limited_invites += 1
        return allowed


def parse_networks(entries: list[str] | tuple[str, ...]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `192.0.2.7` (one host) or `2001:db8::/32`; raises ValueError naming the bad entry."""
    networks: list[Network] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not a network like 203.0.113.0/24 or an IP address") from None
    return tuple(networks)
