"""How fast the emulator serves upload-by-URL, and whether it stays correct.

The emulator runs in one process, the image origin in another, and plain httpx
clients (asyncio, keep-alive) in ``--clients`` more, all on 127.0.0.1. For each
server set-up, side by side, it prints:

- requests a second with ``--connections`` connections for ``--seconds``, and
  the p50 and p99 latency a client saw;
- the CPU the emulator process spent per request, the share of one core it
  used (well below 1: the clients, not the emulator, set the pace), and so the
  requests a second one core of emulator could serve;
- a check under 200 concurrent connections: 1000 uploads, every one answered 200
  with its own ID, and the emulator's stats counting exactly 1000 stored.

The batch token's rate limit is raised out of the way: this measures the
emulator's capacity, not Cloudflare's 200 requests a second.

    .venv/bin/python bench/emulator_throughput.py
    .venv/bin/python bench/emulator_throughput.py --seconds 10 --setup uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import ssl
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import httpx
import uvicorn

from migrator.emulator import Emulator, RateLimit, Settings
from migrator.emulator.origin import Origin

SETUPS = {"uvloop": ("httptools", "uvloop"), "asyncio": ("h11", "asyncio")}
"""Server set-ups compared: uvicorn's fast C parser and loop, and its pure-Python
defaults."""
CROWD = 200
CROWD_UPLOADS = 5
_BOUNDARY = "migrator-bench-boundary"


def serve_origin(sock: socket.socket, http: str, loop: str) -> None:
    """Serve synthetic images on an already bound socket until terminated."""
    config = uvicorn.Config(
        Origin(), http=http, loop=loop, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve_emulator(pipe: Connection, loop: str) -> None:
    """Run an emulator; answer "stats" with its stats and CPU time, stop on "stop"."""
    settings = Settings(batch_rate=RateLimit(1_000_000, 1.0))
    with Emulator(settings, speedups=loop == "uvloop") as emulator:
        pipe.send((emulator.batch_url, emulator.batch_token()))
        while pipe.recv() == "stats":
            pipe.send((emulator.stats(), time.process_time()))


def upload_body(image_url: str) -> bytes:
    """Encode the multipart form once: the clients' cost is not what is measured."""
    return (
        f"--{_BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="url"\r\n\r\n'
        f"{image_url}\r\n--{_BOUNDARY}--\r\n"
    ).encode()


async def connection_loop(
    client: httpx.AsyncClient,
    body: bytes,
    until: float,
    count: int | None,
    latencies: list[float],
    ids: list[str | None],
) -> None:
    """Upload by URL over one connection until ``until`` or ``count`` uploads."""
    done = 0
    while time.time() < until and (count is None or done < count):
        started = time.perf_counter()
        response = await client.post("/images/v1", content=body)
        latencies.append(time.perf_counter() - started)
        ok = response.status_code == 200
        ids.append(response.json()["result"]["id"] if ok else None)
        done += 1


def load(
    pipe: Connection,
    batch_url: str,
    token: str,
    body: bytes,
    connections: int,
    seconds: float,
    count: int | None,
) -> None:
    """A client process: open its clients, say it is ready, receive the start
    time (wall clock, shared by every process), upload for ``seconds``, and send
    back what it saw."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={_BOUNDARY}",
    }
    latencies: list[float] = []
    ids: list[str | None] = []

    async def run() -> None:
        # One SSL context for all: each client would otherwise load the CA
        # certificates again, tens of milliseconds apiece.
        context = ssl.create_default_context()
        clients = [
            httpx.AsyncClient(
                base_url=batch_url, headers=headers, timeout=60, verify=context
            )
            for _ in range(connections)
        ]
        pipe.send("ready")
        start = pipe.recv()
        await asyncio.sleep(max(0.0, start - time.time()))
        loops = [
            connection_loop(client, body, start + seconds, count, latencies, ids)
            for client in clients
        ]
        await asyncio.gather(*loops)
        for client in clients:
            await client.aclose()

    asyncio.run(run())
    pipe.send((latencies, ids))


def drive(
    batch_url: str,
    token: str,
    body: bytes,
    clients: int,
    connections: int,
    seconds: float,
    count: int | None = None,
) -> tuple[list[float], list[str | None]]:
    """Run the client processes over one window of ``seconds``; return the
    latencies and the IDs answered (None for a failed upload)."""
    pipes, processes = [], []
    for index in range(clients):
        share = connections // clients + (index < connections % clients)
        here, there = multiprocessing.Pipe()
        process = multiprocessing.Process(
            target=load, args=(there, batch_url, token, body, share, seconds, count)
        )
        process.start()
        pipes.append(here)
        processes.append(process)
    for pipe in pipes:
        pipe.recv()
    start = time.time() + 0.2
    for pipe in pipes:
        pipe.send(start)

    latencies: list[float] = []
    ids: list[str | None] = []
    for pipe in pipes:
        seen, answered = pipe.recv()
        latencies += seen
        ids += answered
    for process in processes:
        process.join()
    return latencies, ids


def run_setup(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """Measure one server set-up: speed, then correctness under 200 connections."""
    http, loop = SETUPS[name]
    origin_socket = socket.create_server(("127.0.0.1", 0), backlog=2048)
    origin = multiprocessing.Process(
        target=serve_origin, args=(origin_socket, http, loop), daemon=True
    )
    here, there = multiprocessing.Pipe()
    emulator = multiprocessing.Process(
        target=serve_emulator, args=(there, loop), daemon=True
    )
    origin.start()
    emulator.start()
    try:
        batch_url, token = here.recv()
        port = origin_socket.getsockname()[1]
        body = upload_body(f"http://127.0.0.1:{port}/synthetic/bench/64x64.jpg")
        clients, connections = options.clients, options.connections

        drive(batch_url, token, body, clients, connections, 1.0)  # warm up
        here.send("stats")
        _, cpu_before = here.recv()
        latencies, _ = drive(
            batch_url, token, body, clients, connections, options.seconds
        )
        here.send("stats")
        stats_before, cpu_after = here.recv()
        crowd_latencies, ids = drive(
            batch_url, token, body, clients, CROWD, 600, CROWD_UPLOADS
        )
        here.send("stats")
        stats_after, _ = here.recv()
        here.send("stop")
    finally:
        for process in (emulator, origin):
            process.terminate()
            process.join(timeout=10)
        origin_socket.close()

    quantiles = statistics.quantiles(latencies, n=100)
    stored = stats_after["uploads"]["stored"] - stats_before["uploads"]["stored"]
    expected = CROWD * CROWD_UPLOADS
    good = [image_id for image_id in ids if image_id is not None]
    return {
        "rate": len(latencies) / options.seconds,
        "p50": quantiles[49] * 1000,
        "p99": quantiles[98] * 1000,
        "cpu_ms": (cpu_after - cpu_before) * 1000 / len(latencies),
        "core": (cpu_after - cpu_before) / options.seconds,
        "crowd_p99": statistics.quantiles(crowd_latencies, n=100)[98] * 1000,
        "correct": len(good) == len(set(good)) == expected and stored == expected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--setup", choices=sorted(SETUPS), action="append")
    options = parser.parse_args()

    names = options.setup or list(SETUPS)
    results = {name: run_setup(name, options) for name in names}

    print(
        f"upload by URL: {options.connections} connections from {options.clients} "
        f"client processes for {options.seconds:g} s, then {CROWD} connections x "
        f"{CROWD_UPLOADS} uploads"
    )
    print(
        f"{'set-up':<8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'emulator CPU ms/req':>20} {'core used':>9} {'req/s per core':>15} "
        f"{'200-conn p99 ms':>16}  correct"
    )
    for name, got in results.items():
        print(
            f"{name:<8} {got['rate']:>7.0f} {got['p50']:>7.1f} {got['p99']:>7.1f} "
            f"{got['cpu_ms']:>20.2f} {got['core']:>9.2f} {1000 / got['cpu_ms']:>15.0f} "
            f"{got['crowd_p99']:>16.1f}  {got['correct']}"
        )
    if len(results) == 2:
        fast, slow = (results[name] for name in SETUPS)
        print(
            f"uvloop/asyncio: {slow['cpu_ms'] / fast['cpu_ms']:.2f}x less emulator "
            f"CPU per request, {fast['rate'] / slow['rate']:.2f}x the requests a "
            "second (the clients' pace when 'core used' is well below 1)"
        )


if __name__ == "__main__":
    main()
