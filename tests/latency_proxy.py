"""A TCP proxy on loopback that delays every response, and can drop connections for a while.

Object stores answer in 10-50 ms within a region; the moto server on loopback in
well under a millisecond of network time.  Put this proxy in front of it to see
what a store's latency does to a run:

* every byte from the server reaches the client ``delay`` seconds after it left
  the server (a fixed latency per response; throughput is not limited);
* ``SIGUSR1`` makes it drop every open connection and refuse new ones (accept,
  then close at once) for ``drop_seconds``: a store that fails for a moment.

It runs in a child process (``python tests/latency_proxy.py UPSTREAM_PORT DELAY
DROP_SECONDS``), binds 127.0.0.1 on a port the kernel picks and prints it, and
stops when its stdin reaches end-of-file or after ``MAX_SECONDS``, whichever
comes first; it accepts at most ``MAX_CONNECTIONS`` at a time.  Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["LatencyProxy", "latency_proxy"]

MAX_SECONDS = 1800.0
MAX_CONNECTIONS = 1024


@dataclass(frozen=True)
class LatencyProxy:
    port: int
    delay: float
    proc: subprocess.Popen

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop(self) -> None:
        """Drop all connections and refuse new ones for the proxy's ``drop_seconds``."""
        self.proc.send_signal(signal.SIGUSR1)


@contextlib.contextmanager
def latency_proxy(upstream_port: int, delay: float, drop_seconds: float = 3.0, timeout: float = 30.0):
    """Start the proxy in front of ``127.0.0.1:upstream_port``; yield a :class:`LatencyProxy`."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(upstream_port), str(delay),
                             str(drop_seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            raise RuntimeError(f"latency proxy did not start within {timeout:.0f} s")
        yield LatencyProxy(int(line), delay, proc)
    finally:
        from s3_server import stop_by_eof  # here, not at the top: this file also runs as the proxy process

        stop_by_eof(proc)


async def _serve(upstream_port: int, delay: float, drop_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    state = {"drop_until": 0.0}
    live: set = set()
    slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def on_drop() -> None:
        state["drop_until"] = time.monotonic() + drop_seconds
        for w in list(live):
            w.transport.abort()

    loop.add_signal_handler(signal.SIGUSR1, on_drop)

    async def pump(reader, writer, lag: float) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + lag, data))
        finally:
            queue.put_nowait((0.0, None))
            with contextlib.suppress(Exception):
                await sender
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(client_r, client_w) -> None:
        if time.monotonic() < state["drop_until"]:
            client_w.transport.abort()
            return
        async with slots:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
            except OSError:
                client_w.transport.abort()
                return
            live.update((client_w, up_w))
            try:
                await asyncio.gather(pump(client_r, up_w, 0.0), pump(up_r, client_w, delay), return_exceptions=True)
            finally:
                live.difference_update((client_w, up_w))
                for w in (client_w, up_w):
                    w.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or (
        os.read(sys.stdin.fileno(), 4096) or stdin_closed.set_result(None)))
    async with server:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stdin_closed, MAX_SECONDS)


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))
