"""Throttling of failed credentials per client address: a token bucket per address.

Each address may fail `burst` times at once, then once per `1 / per_second` seconds: a wrong bearer token or a
wrong login costs one token; while an address has none left, its bearer tokens and logins are not even
checked (429 with Retry-After), so guessing runs at `per_second`, not at the server's request rate. Other
addresses are not affected, and neither are requests with a valid session cookie (a 256-bit random id is not
guessed). IPv6 clients are counted per /64, the block one host usually gets. The buckets live in memory per
worker process (with `--workers N` an address gets N buckets) and at most `max_clients` are kept: full
buckets go first, then the least recently failed.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict

BURST = 10  # failures an address may make at once
PER_SECOND = 1.0  # then this many per second
MAX_CLIENTS = 100_000


def client_key(address: str | None) -> str:
    """The bucket of a client address: the address itself, an IPv6 address's /64 network."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a Unix socket or a test client: its own bucket
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureThrottle:
    """`retry_after(address)` is 0 while the address may try a credential; `failed(address)` costs a try."""

    def __init__(self, burst: int = BURST, per_second: float = PER_SECOND, max_clients: int = MAX_CLIENTS) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, when = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.per_second)

    def retry_after(self, address: str | None) -> int:
        """Whole seconds until the address may try again (0: now)."""
        with self._lock:
            tokens = self._tokens(client_key(address), time.monotonic())
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.per_second))

    def take(self, address: str | None) -> int:
        """Spend a try before checking a credential whose check waits (a login reads its body first): 0 when the
        address had one, else the seconds to wait (nothing spent). Checking `retry_after`, awaiting the body
        and only then calling `failed` would let any number of concurrent attempts pass the check at once."""
        key, now = client_key(address), time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens < 1:
                return max(1, math.ceil((1 - tokens) / self.per_second))
            self._put(key, tokens - 1, now)
        return 0

    def refund(self, address: str | None) -> None:
        """Give back the try `take` spent (the credential was right)."""
        key, now = client_key(address), time.monotonic()
        with self._lock:
            self._put(key, min(float(self.burst), self._tokens(key, now) + 1), now)

    def failed(self, address: str | None) -> None:
        key, now = client_key(address), time.monotonic()
        with self._lock:
            self._put(key, max(0.0, self._tokens(key, now) - 1), now)

    def _put(self, key: str, tokens: float, now: float) -> None:
        """Store a bucket (the lock held)."""
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_clients:
            self._evict(now)

    def _evict(self, now: float) -> None:
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[key]
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
