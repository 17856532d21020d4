"""A TCP proxy that delays what it forwards, standing in for the network between two machines.

    python -m tests.netdelay --listen 9100 --to 127.0.0.1:9000 --delay 20 100

Every chunk, in either direction, is held for a delay drawn uniformly between the two bounds
(milliseconds) before it is passed on; chunks of one connection keep their order (a chunk never
overtakes the one before it), while connections are delayed independently, so requests sent in
one order over several connections may arrive in another, as on a real network. This kernel has
no netem; this proxy is for the benches and tests, on loopback (or the bridge of tests/netns.py) only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random


async def _carry(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, low: float, high: float, rng: random.Random
) -> None:
    """Pass ``reader``'s chunks to ``writer``, each after its delay, in order."""
    loop = asyncio.get_running_loop()
    last = 0.0
    pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, chunk = await pending.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof() if writer.can_write_eof() else writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            chunk = await reader.read(65536)
            last = max(last, loop.time() + rng.uniform(low, high))
            pending.put_nowait((last, chunk))
            if not chunk:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        with contextlib.suppress(OSError):
            writer.close()


def _handler(target: tuple[str, int], low: float, high: float, seed: int | None):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _carry(client_reader, upstream_writer, low, high, rng),
            _carry(upstream_reader, client_writer, low, high, rng),
            return_exceptions=True,
        )

    return handle


async def serve(
    listen_port: int,
    target: tuple[str, int],
    low_ms: float,
    high_ms: float,
    seed: int | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Forward ``host:listen_port`` to ``target``, every chunk delayed ``low_ms`` to ``high_ms``."""
    handle = _handler(target, low_ms / 1000, high_ms / 1000, seed)
    server = await asyncio.start_server(handle, host, listen_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True, help="the port to listen on")
    parser.add_argument(
        "--host", default="127.0.0.1", help="where to listen: loopback, or the bridge of tests/netns.py"
    )
    parser.add_argument("--to", required=True, help="host:port to forward to")
    parser.add_argument("--delay", type=float, nargs=2, default=[20.0, 100.0], metavar=("LOW_MS", "HIGH_MS"))
    parser.add_argument("--seed", type=int)
    options = parser.parse_args()
    host, port = options.to.rsplit(":", 1)
    target = (host, int(port))
    asyncio.run(serve(options.listen, target, *options.delay, options.seed, host=options.host))


if __name__ == "__main__":
    main()
