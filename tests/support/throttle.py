"""A TCP forwarder on 127.0.0.1 that passes a real server's answers on at a bounded rate, so a test
can act while a blob is half-way through (a real registry on loopback sends 16 MiB in milliseconds)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

CHUNK = 64 * 1024


class ThrottledProxy:
    """Forwards connections to `target_port`; server → client bytes at most `rate` bytes per second
    per connection. `stop()` closes everything and joins the threads."""

    def __init__(self, target_port: int, rate: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            self._spawn(self._pipe, client, server, None)
            self._spawn(self._pipe, server, client, self._rate)

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        started, sent = time.monotonic(), 0
        with contextlib.suppress(OSError):
            while data := src.recv(CHUNK):
                dst.sendall(data)
                sent += len(data)
                if rate is not None:  # pace to `rate`: the point of this forwarder
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):  # wakes the accepting thread (closing alone does not)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
