"""Measure what the plugin bridge adds to a Vault request, and its start time.

Prints figures and asserts nothing:
1. End to end over HTTP on one throwaway OpenBao dev server: a built-in
   kv-v2 read, the echo test plugin's trivial `ping` read, and its `kv/`
   read (one storage get through the broker). Each is read by two clients:
   a lean one (`http.client` on one kept-alive connection) and hvac
   (`Client.read` on a requests session), which is what most users' tooling
   looks like. Every (client, target) pair runs once per round, in an order
   that rotates each round. Medians, p10/p90, and ratios to the kv-v2 read
   of the same client.
2. Where the time goes. (a) CPU time per read of this process, the OpenBao
   server and the plugin process, for kv-v2 reads and plugin pings in
   alternating blocks (lean client). (b) One HandleRequest RPC sent from
   Python straight to a plugin process, with and without mutual TLS, and
   the in-process Python dispatch alone.
3. Start-to-handshake time of the single file built by scripts/build-plugin:
   first start after install (unpacking into a new SHIV_ROOT) and warm.

Usage: scripts/bench-bridge [--rounds N] [--requests N] [--starts N]
       [--skip-start]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hvac
import psutil
import requests

from bench_bridge_parts import bench_rpc, bench_start
from tests.plugin_fixtures.openbao import OpenBao, install_echo_plugin, start_openbao

KV = "kv-v2 read (built in)"
PING = "plugin ping (no storage)"
TARGETS = {
    KV: "kv/data/bench",
    PING: "e/ping",
    "plugin kv read (1 storage get)": "e/kv/bench",
}
Reader = Callable[[str], float]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="rounds; each reads every target with each client (default 15)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=40,
        help="sequential requests per target, client and round (default 40)",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=5,
        help="warm starts of the plugin file to time (default 5)",
    )
    parser.add_argument(
        "--skip-start",
        action="store_true",
        help="skip part 3, which builds the plugin file first",
    )
    return parser.parse_args()


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p10 = ms[len(ms) // 10]
    p90 = ms[(len(ms) * 9) // 10]
    return f"median {statistics.median(ms):7.3f} ms  p10 {p10:7.3f}  p90 {p90:7.3f}"


# --- 1. end to end -----------------------------------------------------------


def lean_reader(server: OpenBao) -> Reader:
    host, port = server.addr.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def timed_get(path: str) -> float:
        started = time.perf_counter()
        connection.request(
            "GET", f"/v1/{path}", headers={"X-Vault-Token": server.token}
        )
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return elapsed

    return timed_get


def hvac_reader(server: OpenBao) -> Reader:
    session = requests.Session()
    # Proxy variables or a .netrc must not send loopback traffic elsewhere.
    session.trust_env = False
    client = hvac.Client(url=server.addr, token=server.token, session=session)

    def timed_read(path: str) -> float:
        started = time.perf_counter()
        client.read(path)
        return time.perf_counter() - started

    return timed_read


def prepare(server: OpenBao) -> None:
    """Mount kv-v2 and the echo plugin, and write the values the targets read."""
    install_echo_plugin(server, "echo")
    server.register("echo", "echo")
    server.request("POST", "sys/mounts/e", {"type": "echo"})
    server.request("POST", "sys/mounts/kv", {"type": "kv", "options": {"version": "2"}})
    server.request("POST", "kv/data/bench", {"data": {"v": "x" * 32}})
    server.request("POST", "e/kv/bench", {"v": "x" * 32})


def bench_http(
    server: OpenBao, rounds: int, requests_per_round: int
) -> dict[str, dict[str, list[float]]]:
    readers = {"lean": lean_reader(server), "hvac": hvac_reader(server)}
    pairs = [(client, target) for client in readers for target in TARGETS]
    samples: dict[str, dict[str, list[float]]] = {
        client: {target: [] for target in TARGETS} for client in readers
    }
    for client, target in pairs:  # warm-up
        for _ in range(20):
            readers[client](TARGETS[target])
    for round_number in range(rounds):
        shift = round_number % len(pairs)
        for client, target in pairs[shift:] + pairs[:shift]:
            read = readers[client]
            path = TARGETS[target]
            samples[client][target].extend(
                read(path) for _ in range(requests_per_round)
            )
    return samples


# --- 2. where the time goes --------------------------------------------------


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def bench_cpu(
    server: OpenBao, blocks: int, requests_per_block: int
) -> dict[str, dict[str, float]]:
    """Return CPU microseconds per read, by target and process."""
    processes = {
        "client (this process)": psutil.Process(),
        "OpenBao": psutil.Process(server.process.pid),
        "plugin": server.plugin_processes()[0],
    }
    read = lean_reader(server)
    totals = {target: dict.fromkeys(processes, 0.0) for target in (KV, PING)}
    for block in range(blocks):
        target = (KV, PING)[block % 2]
        before = {name: cpu_seconds(p) for name, p in processes.items()}
        for _ in range(requests_per_block):
            read(TARGETS[target])
        for name, process in processes.items():
            totals[target][name] += cpu_seconds(process) - before[name]
    reads = requests_per_block * blocks / 2
    return {
        target: {name: seconds / reads * 1e6 for name, seconds in by_process.items()}
        for target, by_process in totals.items()
    }


def report_http(samples: dict[str, dict[str, list[float]]]) -> None:
    print("\n1. end to end, GET of each target, interleaved")
    for client, by_target in samples.items():
        base = statistics.median(by_target[KV])
        print(f"  {client} client")
        for name, values in by_target.items():
            ratio = statistics.median(values) / base
            print(f"    {name:32} {summary(values)}  ratio {ratio:4.2f}")
        # OpenBao 2.7 sends resolve-path, then the request: two RPCs per read.
        per_rpc = (statistics.median(by_target[PING]) - base) / 2
        print(f"    plugin overhead per RPC, estimated: {per_rpc * 1000:.3f} ms")


def report_cpu(cpu: dict[str, dict[str, float]]) -> None:
    print("\n2a. CPU per read (us), lean client, alternating blocks")
    for target, by_process in cpu.items():
        row = "  ".join(f"{name} {us:6.1f}" for name, us in by_process.items())
        print(f"  {target:32} {row}")
    vault_extra = cpu[PING]["OpenBao"] - cpu[KV]["OpenBao"]
    print(
        f"  per plugin RPC: plugin {cpu[PING]['plugin'] / 2:.1f} us, "
        f"OpenBao's extra over a kv-v2 read {vault_extra / 2:.1f} us"
    )


def main() -> None:
    args = parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as temp:
        server = start_openbao(Path(temp), log_level="info")
        try:
            prepare(server)
            http_samples = bench_http(server, args.rounds, args.requests)
            cpu = bench_cpu(server, 2 * args.rounds, 5 * args.requests)
        finally:
            server.stop()
        shutil.rmtree(temp, ignore_errors=True)
    report_http(http_samples)
    report_cpu(cpu)

    print("\n2b. one HandleRequest RPC sent from Python (ping), grpcio client")
    rpc_samples = bench_rpc(args.rounds * args.requests)
    for name, samples in rpc_samples.items():
        print(f"  {name:34} {summary(samples)}")

    if args.skip_start:
        return
    print("\n3. start to handshake line, production file")
    for name, samples in bench_start(args.starts).items():
        print(f"  {name:34} {summary(samples)}  (n={len(samples)})")
