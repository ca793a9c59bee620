"""A TCP proxy on 127.0.0.1 that can go silent: the connections it carries stop passing bytes but stay
open, as when a NAT or load balancer between a client and Redis drops its state (half-open
connections: no FIN, no RST, nothing). Used to show that clients notice and reconnect."""

from __future__ import annotations

import contextlib
import socket
import threading


class StallingProxy:
    """Forwards ``127.0.0.1:port`` to ``target``. :meth:`stall` silences every connection open now and
    every one accepted until :meth:`resume`; a silenced connection stays silent (and open) for good."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stalled = False
        self._silenced: set[int] = set()  # ids of connections that no longer forward
        self._sockets: list[socket.socket] = []
        self.swallowed_connections: set[int] = set()  # silenced connections that sent bytes since
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stall(self) -> None:
        with self._lock:
            self._stalled = True
            self._silenced.update(id(s) for s in self._sockets)

    def resume(self) -> None:
        with self._lock:
            self._stalled = False

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                if self._stalled:
                    self._silenced.update((id(client), id(upstream)))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, id(client)), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, connection: int) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                silent = id(source) in self._silenced
                if silent:
                    self.swallowed_connections.add(connection)
            if not silent:
                try:
                    sink.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
