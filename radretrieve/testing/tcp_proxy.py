"""A small real TCP proxy for tests of a DIMSE client: it forwards every connection to a server (Orthanc's
DICOM port), records what each connection's client sent, and lets a test act on the bytes as they pass (stop
the server mid-transfer, change its configuration before an association is answered).

Runs in threads of the test process on a free 127.0.0.1 port (`with TcpProxy(target_port, hook) as proxy:`).
`hook(conn, upstream, data)` is called with each chunk before it is forwarded (`upstream`: client to server)
and may return False to close that connection instead.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Hook = Callable[["Connection", bool, bytes], "bool | None"]


@dataclass
class Connection:
    """One client connection through the proxy."""

    number: int  # 0 for the first connection
    sent: bytearray = field(default_factory=bytearray)  # everything the client sent (association request first)
    received: int = 0  # bytes the server sent to the client


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int, hook: Hook | None = None) -> None:
        self.target_port, self.hook = target_port, hook
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        self._accepting = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()  # nothing listens behind: the client sees the connection closed
                continue
            for sock in (client, server):  # forward each chunk at once (Nagle would hold small DIMSE messages)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                conn = Connection(len(self.connections))
                self.connections.append(conn)
                self._sockets += [client, server]
                for src, dst, up in ((client, server, True), (server, client, False)):
                    thread = threading.Thread(target=self._pump, args=(conn, src, dst, up), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, conn: Connection, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    conn.sent += data
                else:
                    conn.received += len(data)
                if self.hook is not None and self.hook(conn, upstream, data) is False:
                    break
                dst.sendall(data)
        except OSError:
            pass  # the other side went away
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            threads = list(self._threads)
        self._accepting.join(timeout=10)
        for thread in threads:
            thread.join(timeout=10)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
