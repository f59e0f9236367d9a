"""HTTPS for the collector's API: a TLS front, in this process, before waitress.

waitress has no TLS, and its maintainers say to terminate TLS in front of it (Pylons/waitress#459); it stays the
HTTP server, with its strict framing, limits and timeouts (docs/dependencies.md says why). The front is the
standard library's asyncio, in a thread of its own: it accepts on the public address, does each TLS handshake
(TLS 1.2 or newer) within a time limit, so a client that never finishes one holds only its own socket and blocks
nobody, and then pipes bytes both ways between the client and waitress, which listens on a Unix socket in the data
directory (mode 0600: no other user reaches the API around TLS).

- Flow control: a side whose send buffer is full stops reading the other side until it drains (asyncio's
  ``pause_writing``/``resume_writing``, what ``StreamWriter.drain`` waits on), so a slow reader costs a bounded
  buffer, never memory in proportion to a model download.
- Connections are counted from accept, handshakes included; beyond ``max_connections`` a new one is closed at once.
- Ends: a side that stops sending is passed on as such (``write_eof``) where the other side's transport can
  (waitress's socket); TLS cannot half-close in asyncio (a close_notify ends the connection), so there the other
  side is closed once what it holds is sent. Idle and stalled connections are waitress's to time out
  (``--http-timeout``); when it closes its side, the front closes the client's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Callable, Optional

from edgebench.agent.errors import UsageError
from edgebench.agent.modelfile import file_problem

log = logging.getLogger(__name__)
BACKLOG = 1024
STOP_TIMEOUT_S = 10.0
ACCEPT_RETRY_S = 1.0  # after a failed accept (no descriptor left), as asyncio's servers wait


# ---------------------------------------------------------------- the certificate

def _no_password(flag: str, path: str) -> Callable[[], bytes]:
    """OpenSSL's callback for an encrypted key: a service has nobody to type a passphrase (OpenSSL would prompt)."""
    def refuse() -> bytes:
        raise UsageError(f"{flag} {path}: the key is encrypted: give an unencrypted key, readable by the collector "
                         "alone")

    return refuse


def server_context(cert_file: str, key_file: Optional[str] = None) -> ssl.SSLContext:
    """TLS 1.2 or newer with ``cert_file`` (the certificate, then its chain) and its key (``key_file`` None: in
    ``cert_file``). A file that cannot be read, is not PEM, or a key that does not match is one UsageError."""
    for flag, path in (("--http-tls-cert", cert_file), ("--http-tls-key", key_file)):
        problem = file_problem(Path(path)) if path else None
        if problem:
            raise UsageError(f"{flag} {path} {problem}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password(
            "--http-tls-key" if key_file else "--http-tls-cert", key_file or cert_file))
    except ssl.SSLError as exc:
        files = f"--http-tls-cert {cert_file}" + (f" / --http-tls-key {key_file}" if key_file else "")
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise UsageError(f"{files}: the key does not match the certificate") from None
        why = f" ({exc.reason})" if exc.reason else ""
        raise UsageError(f"{files}: not a PEM certificate and its private key{why}") from None
    return context


def unix_listener(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` that only this user may connect to (a stale one is replaced)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink(missing_ok=True)
        sock.bind(str(path))
        os.chmod(path, 0o600)  # before listen(): nobody connects in between
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        hint = " (a Unix socket's path holds at most 107 bytes: a shorter --data-dir)" if len(str(path)) > 100 else ""
        raise UsageError(f"the HTTP API's socket {path}: {exc.strerror or exc}{hint}") from None
    return sock


# ---------------------------------------------------------------- one connection: two pipes

class _Pipe(asyncio.Protocol):
    """One side of a relayed connection: what it receives goes to its peer's transport."""

    def __init__(self, tls: bool = False, on_lost: Optional[Callable[[], None]] = None):
        self.tls = tls  # the client's side: asyncio's TLS closes itself at the peer's end of data
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Optional[_Pipe] = None
        self.pending: list[bytes] = []  # received before the peer exists (below)
        self.on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:
            transport.pause_reading()  # type: ignore[attr-defined] - nowhere to send it yet: link() resumes

    def data_received(self, data: bytes) -> None:
        if self.peer is None:  # Python < 3.11 hands over what came with the handshake, paused or not
            self.pending.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        other = self.peer.transport if self.peer else None
        if other is not None and other.can_write_eof():
            other.write_eof()  # a half-close passed on; our side may still get the answer
            return not self.tls  # keep reading the answer (TLS closes itself regardless)
        if other is not None:
            other.close()  # TLS: no half-close; close() sends what is buffered first
        return False

    def pause_writing(self) -> None:  # our send buffer is full: stop taking the other side's bytes (drain)
        _reading(self.peer, False)

    def resume_writing(self) -> None:
        _reading(self.peer, True)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.close()
        if self.on_lost:
            self.on_lost()

    def abort(self) -> None:
        if self.transport:
            self.transport.abort()


def _reading(pipe: Optional[_Pipe], on: bool) -> None:
    transport = pipe.transport if pipe else None
    if transport is None or transport.is_closing():
        return
    if on:
        transport.resume_reading()
    else:
        transport.pause_reading()


def link(client: _Pipe, backend: _Pipe) -> None:
    client.peer, backend.peer = backend, client
    for data in client.pending:
        backend.transport.write(data)
    client.pending.clear()
    _reading(client, True)
    _reading(backend, True)


# ---------------------------------------------------------------- the front

class TlsFront:
    """TLS on ``sock`` (bound, public), relayed to the HTTP server listening on the Unix socket ``backend``."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, backend: Path, handshake_timeout_s: float,
                 max_connections: int):
        self.sock, self.context, self.backend = sock, context, str(backend)
        self.handshake_timeout_s, self.max_connections = handshake_timeout_s, max_connections
        self.loop = asyncio.new_event_loop()
        self.open: dict[socket.socket, list[_Pipe]] = {}  # accepted connection -> its pipes, once made
        self.refused = 0
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references
        self._thread: Optional[threading.Thread] = None

    @property
    def server_address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def start(self) -> None:
        """Serve from a thread of its own (the listening socket queues connections until it accepts)."""
        self.sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="https-front", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._spawn(self._accept())
        self.loop.run_forever()
        self.loop.close()

    def _spawn(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self) -> None:
        """Accept, and count, before any byte is read: the TLS transport is made on the accepted socket, so the
        handshake reads the ClientHello (loop.start_tls on an accepted transport loses it on Python < 3.11)."""
        while True:
            try:
                conn, address = await self.loop.sock_accept(self.sock)
            except OSError as exc:  # out of descriptors: wait, as asyncio's own servers do
                log.warning("HTTPS: cannot accept a connection: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if len(self.open) >= self.max_connections:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("HTTPS: %d connections open, the most allowed: closing new ones (%d so far)",
                                len(self.open), self.refused)
                conn.close()
                continue
            self.open[conn] = []
            self._spawn(self._relay(conn, address))

    async def _relay(self, conn: socket.socket, address: object) -> None:
        client = _Pipe(tls=True, on_lost=lambda: self._closed(conn))
        self.open[conn].append(client)
        try:
            await self.loop.connect_accepted_socket(lambda: client, conn, ssl=self.context,
                                                    ssl_handshake_timeout=self.handshake_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError and ConnectionError are OSErrors
            log.debug("HTTPS: no TLS with %s: %s", address, exc)
            conn.close()  # closed with its transport already; again is harmless
            self._closed(conn)
            return
        backend = _Pipe()
        self.open[conn].append(backend)
        try:
            await self.loop.create_unix_connection(lambda: backend, self.backend)
        except OSError as exc:  # waitress is gone (shutting down) or refuses
            log.warning("HTTPS: the API's socket %s does not answer: %s", self.backend, exc)
            client.transport.close()
            return
        if client.transport.is_closing():  # the client left while the backend connected
            backend.transport.close()
            return
        link(client, backend)

    def _closed(self, conn: socket.socket) -> None:
        self.open.pop(conn, None)

    def close(self) -> None:
        """Stop accepting, cut every connection, stop the thread."""
        if self._thread is None:
            self.sock.close()
            return
        done = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        try:
            done.result(STOP_TIMEOUT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None

    async def _stop(self) -> None:
        for task in list(self._tasks):  # the acceptor, handshakes and connects under way
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.sock.close()
        for conn, pipes in list(self.open.items()):
            for pipe in pipes:
                pipe.abort()
            conn.close()
        await asyncio.sleep(0)  # let the aborted transports' connection_lost run
