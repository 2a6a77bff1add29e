"""The sandbox's end of egress: relays every connection to its loopback proxy port to the egress socket.

Stdlib only, started by the supervisor as ``python3 -I -S -B forwarder.py LISTEN_FD SOCKET_PATH``.
The listening socket (``127.0.0.1:3128`` in the sandbox's own network namespace) belongs to
the supervisor, which bound it before the sandbox reported ready and keeps it when a
timeout or restart kills this process, so connections wait in its backlog meanwhile.
The other end of ``SOCKET_PATH`` is the guard proxy on the host (:mod:`tools.sandbox.egress`):
nothing here decides anything, it only copies bytes, both ways, in one thread.
"""

from __future__ import annotations

import selectors
import socket
import sys

CHUNK = 65536
MAX_PENDING = 1 << 20  # per direction: stop reading a side while the other has this much unsent
CONNECT_TIMEOUT_S = 10.0


class Link:
    """One relayed connection; ``pending[s]`` holds the bytes waiting to be written to socket ``s``."""

    def __init__(self, selector: selectors.BaseSelector, a: socket.socket, b: socket.socket) -> None:
        self.selector = selector
        self.socks = (a, b)
        self.pending = {a: bytearray(), b: bytearray()}
        self.ended = {a: False, b: False}  # this side sent end of file (it is not read any more)
        self.watched: dict[socket.socket, int] = {}
        for s in self.socks:
            s.setblocking(False)
        self.update()

    def peer(self, s: socket.socket) -> socket.socket:
        return self.socks[1] if s is self.socks[0] else self.socks[0]

    def on_event(self, s: socket.socket, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self.read(s)
            if mask & selectors.EVENT_WRITE:
                self.write(s)
        except OSError:
            self.close()
            return
        self.update()

    def read(self, s: socket.socket) -> None:
        data = s.recv(CHUNK)
        peer = self.peer(s)
        if data:
            self.pending[peer] += data
            return
        self.ended[s] = True
        if not self.pending[peer]:
            peer.shutdown(socket.SHUT_WR)

    def write(self, s: socket.socket) -> None:
        buffer = self.pending[s]
        del buffer[: s.send(buffer)]
        if not buffer and self.ended[self.peer(s)]:
            s.shutdown(socket.SHUT_WR)

    def update(self) -> None:
        if all(self.ended.values()) and not any(self.pending.values()):
            self.close()
            return
        for s in self.socks:
            events = selectors.EVENT_WRITE if self.pending[s] else 0
            if not self.ended[s] and len(self.pending[self.peer(s)]) < MAX_PENDING:
                events |= selectors.EVENT_READ
            self.watch(s, events)

    def watch(self, s: socket.socket, events: int) -> None:
        current = self.watched.get(s, 0)
        if events == current:
            return
        if current and events:
            self.selector.modify(s, events, self)
        elif events:
            self.selector.register(s, events, self)
        else:
            self.selector.unregister(s)
        self.watched[s] = events

    def close(self) -> None:
        for s in self.socks:
            if self.watched.pop(s, 0):
                self.selector.unregister(s)
            s.close()


def accept(selector: selectors.BaseSelector, listener: socket.socket, path: str) -> None:
    try:
        client, _ = listener.accept()
    except OSError:
        return
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.settimeout(CONNECT_TIMEOUT_S)
        upstream.connect(path)
    except OSError:  # the host's proxy is gone: the sandbox is being destroyed
        client.close()
        upstream.close()
        return
    Link(selector, client, upstream)


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, mask in selector.select():
            if key.data is None:
                accept(selector, listener, sys.argv[2])
            else:
                key.data.on_event(key.fileobj, mask)


if __name__ == "__main__":
    main()
