# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A TCP proxy on loopback that loses chosen answers: the request reaches the server, the server answers, and
the proxy closes the client's connection without passing the answer on.

It works for HTTP and HTTPS alike without looking inside: the server closes every connection after its answer,
so on a connection whose answer is to be lost, whatever the server sent last before closing is the answer.
There, the proxy holds back what the server sends; what is followed by silence (the TLS handshake, waiting
for the client) is passed on after HOLD seconds, what is followed by the server's close is dropped.
"""

from __future__ import annotations

import select
import socket
import threading
import time

HOLD = 0.4


class DroppingProxy:
    """Listens on 127.0.0.1:port and forwards each connection to target (host, port).

    drop: the numbers (1, 2, ...) of the connections whose answer is lost. connections: how many were made.
    """

    def __init__(self, target, drop=()):
        self.target = target
        self.drop = set(drop)
        self.connections = 0
        self.dropped = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, scheme):
        return "%s://127.0.0.1:%d" % (scheme, self.port)

    def reset(self, drop=()):
        with self._lock:
            self.drop = set(drop)
            self.connections = 0
            self.dropped = []

    def close(self):
        self._stopped = True
        self._listener.close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept(self):
        while not self._stopped:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                lose = number in self.drop
            threading.Thread(target=self._serve, args=(client, number, lose), daemon=True).start()

    def _serve(self, client, number, lose):
        try:
            upstream = socket.create_connection(self.target, timeout=30)
        except OSError:
            client.close()
            return
        held = []  # (time received, bytes) from the server, not yet passed on
        client_open = True
        try:
            while True:
                now = time.monotonic()
                while held and now - held[0][0] >= HOLD:
                    client.sendall(held.pop(0)[1])
                sockets = [upstream] + ([client] if client_open else [])
                readable, _w, _x = select.select(sockets, [], [], HOLD / 4)
                if client in readable:
                    data = client.recv(65536)
                    if data:
                        upstream.sendall(data)
                    else:
                        client_open = False
                        upstream.shutdown(socket.SHUT_WR)
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        if lose and held:
                            with self._lock:
                                self.dropped.append(number)
                        else:
                            for _when, chunk in held:
                                client.sendall(chunk)
                        return
                    if lose:
                        held.append((time.monotonic(), data))
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            upstream.close()
            client.close()
