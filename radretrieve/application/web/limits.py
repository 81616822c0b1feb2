"""Connection limits of `radretrieve serve` (stdlib only: the CLI reads the defaults before importing uvicorn).

uvicorn answers every new request 503 at once while `max_connections` connections are open (or requests
running), so a flood of connections costs the server sockets, not work, and idle keep-alive connections close
after `keep_alive_s`. Neither uvicorn nor h11 has a time limit for reading a request's headers: connections
that trickle headers stay open (h11 caps their size, 16 KiB), and each one counts against `max_connections`.
"""

from __future__ import annotations

DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_KEEP_ALIVE_S = 5
