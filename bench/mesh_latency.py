"""Delivery latency through one relay versus across two relays of a mesh.

Starts a nats-server with JetStream and two relays (A and B) on 127.0.0.1,
then one writer on A sends edits at a fixed rate while a reader on A and a
reader on B time each edit's arrival. Both paths are measured in the same
run, so the ratio is meaningful on a shared, noisy machine.

    .venv/bin/python -m bench.mesh_latency [--rate 50] [--seconds 20] [--runs 3]

Prints p50 and p99 latency per path and per run, and the median over runs.
Every reader must receive every edit; a run that lost one is reported as
failed, not as a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets
from pycrdt import Doc, Text

from sync.messages import SyncUpdate, encode_sync_update, parse_message
from tests.support.nats_server import NatsServer
from tests.support.relay_process import RelayProcess


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def read_until(socket: websockets.ClientConnection, count: int, arrivals: dict[int, float]) -> None:
    doc = Doc()
    text = doc.get("t", type=Text)
    seen = 0
    while seen < count:
        message = parse_message(await socket.recv())
        if not isinstance(message, SyncUpdate):
            continue
        now = time.perf_counter()
        doc.apply_update(message.update)
        # Each edit appends one marker "<index>;", so the number of markers
        # in the text identifies the edit that just arrived.
        current = str(text)
        seen = current.count(";")
        arrivals.setdefault(seen - 1, now)


async def one_run(url_a: str, url_b: str, rate: float, seconds: float, run: int) -> dict[str, list[float]]:
    doc_name = f"bench/mesh-latency-{run}"
    count = int(rate * seconds)
    options = {"compression": None, "max_size": None}
    async with (
        websockets.connect(f"{url_a}/{doc_name}", **options) as writer,
        websockets.connect(f"{url_a}/{doc_name}", **options) as same,
        websockets.connect(f"{url_b}/{doc_name}", **options) as other,
    ):
        for socket in (writer, same, other):
            await socket.recv()
        await asyncio.sleep(0.5)
        sent: dict[int, float] = {}
        arrivals_same: dict[int, float] = {}
        arrivals_other: dict[int, float] = {}
        readers = [
            asyncio.create_task(read_until(same, count, arrivals_same)),
            asyncio.create_task(read_until(other, count, arrivals_other)),
        ]
        source = Doc()
        text = source.get("t", type=Text)
        updates: list[bytes] = []
        source.observe(lambda event: updates.append(event.update))
        interval = 1.0 / rate
        start = time.perf_counter()
        for index in range(count):
            text.insert(len(text), f"{index};")
            frame = encode_sync_update(updates.pop())
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[index] = time.perf_counter()
            await writer.send(frame)
        try:
            await asyncio.wait_for(asyncio.gather(*readers), 30)
        except asyncio.TimeoutError:
            for reader in readers:
                reader.cancel()
            raise RuntimeError(
                f"run {run} lost edits: same relay got {len(arrivals_same)}/{count}, "
                f"other relay got {len(arrivals_other)}/{count}"
            ) from None
    return {
        "same relay": [(arrivals_same[i] - sent[i]) * 1000 for i in range(count)],
        "other relay": [(arrivals_other[i] - sent[i]) * 1000 for i in range(count)],
    }


async def main_async(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="yrelay-bench-"))
    nats = NatsServer(base / "nats").start()
    relay_a = RelayProcess(base / "a", ["--nats", nats.url, "--relay-id", "bench-a", "--log-level", "warning"]).start()
    relay_b = RelayProcess(base / "b", ["--nats", nats.url, "--relay-id", "bench-b", "--log-level", "warning"]).start()
    results: dict[str, list[tuple[float, float]]] = {"same relay": [], "other relay": []}
    failed = 0
    try:
        print(f"{args.runs} runs, {args.rate:g} edits/s for {args.seconds:g} s each; latency in ms")
        print(f"{'run':>4} {'path':<12} {'p50':>8} {'p99':>8}")
        for run in range(args.runs):
            try:
                latencies = await one_run(relay_a.url, relay_b.url, args.rate, args.seconds, run)
            except RuntimeError as exc:
                failed += 1
                print(f"{run:>4} FAILED: {exc}")
                continue
            for path, values in latencies.items():
                p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
                results[path].append((p50, p99))
                print(f"{run:>4} {path:<12} {p50:>8.2f} {p99:>8.2f}")
    finally:
        relay_a.stop()
        relay_b.stop()
        nats.stop()
    if not results["same relay"]:
        return 1
    print("median over runs:")
    medians = {}
    for path, rows in results.items():
        medians[path] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
        print(f"     {path:<12} {medians[path][0]:>8.2f} {medians[path][1]:>8.2f}")
    same, other = medians["same relay"], medians["other relay"]
    print(f"ratio other/same: p50 {other[0] / same[0]:.2f}x, p99 {other[1] / same[1]:.2f}x")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="edits per second (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="number of runs (default %(default)s)")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
