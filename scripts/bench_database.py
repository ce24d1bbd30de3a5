"""Compare the plugin's PostgreSQL backend with OpenBao's built-in database engine.

One OpenBao dev server and one PostgreSQL cluster, both started here in a
temporary folder, serve two mounts with the same connection, statements and
TTLs (see bench_database_setup): `builtin/` (OpenBao's `database` engine with
its `postgresql-database-plugin`) and `ours/` (the plugin file built by
scripts/build-plugin). Prints figures and asserts nothing:

1. Latency: creds read and synchronous `sys/leases/revoke`, N sequential
   calls per round, the engines interleaved call by call (rotating which
   goes first), over several rounds. Median, p10 and p90 in ms, the
   range of the per-round medians, and agent-bridge / built-in.
   `--baseline FILE` adds a third engine, another build of the plugin, so
   an optimisation is measured against the code it replaces in one run.
2. Throughput: creds read + revoke cycles per second with 1 and 8 clients
   (threads, one kept-alive connection each), the engines taking turns.
3. Floors, for where the time goes: `CREATE ROLE ... PASSWORD` sent by this
   process straight to PostgreSQL, and a creds read of an unknown role on
   each engine, which fails after the engine's first checks.
4. CPU per creds read of OpenBao, the plugin, PostgreSQL and this client
   (bench_database_cpu).

Creds reads use a JWT login token for both engines, revokes the root token.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench_database_cpu import measure_cpu, report_cpu
from bench_database_setup import Servers, VaultHttp, running_servers

WARM_UP_CALLS = 20
OPERATIONS = ("creds", "revoke")
# engine -> operation -> one list of ms per round
Latency = dict[str, dict[str, list[list[float]]]]
# clients -> engine -> cycles per second, one value per run
Rates = dict[int, dict[str, list[float]]]


def main() -> None:
    args = _parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-database-") as name:
        folder = Path(name)
        folder.chmod(0o755)  # PostgreSQL's service user must reach its data
        auth = args.password_authentication
        extra = {}
        if args.plugin_scram_iterations:
            extra = {
                "password_authentication": "scram-sha-256",
                "scram_iterations": args.plugin_scram_iterations,
            }
        print(f"connection: password_authentication={auth} for every engine", end="")
        print(f", but {extra} for agent-bridge" if extra else "")
        with running_servers(
            folder, auth, args.plugin, args.baseline, extra
        ) as servers:
            _run(servers, args)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=5, help="latency rounds (default 5)")
    add("--calls", type=int, default=50, help="calls per engine a round (default 50)")
    add("--cycles", type=int, default=160, help="cycles a throughput run (default 160)")
    add("--runs", type=int, default=3, help="throughput runs per engine (default 3)")
    add(
        "--cpu-reads",
        type=int,
        default=150,
        help="creds reads per engine a round of the CPU measurement (default 150)",
    )
    add(
        "--password-authentication",
        choices=("password", "scram-sha-256"),
        default="password",
        help="how both engines send generated passwords (default password)",
    )
    add(
        "--plugin-scram-iterations",
        type=int,
        metavar="N",
        help="give the agent-bridge engine alone password_authentication="
        "scram-sha-256 and scram_iterations=N (default: the common settings)",
    )
    add("--plugin", type=Path, help="a built plugin file (default: build one)")
    add("--baseline", type=Path, help="another built plugin file to compare")
    return parser.parse_args()


def _run(servers: Servers, args: argparse.Namespace) -> None:
    agent = VaultHttp(servers.addr, servers.agent_token)
    root = VaultHttp(servers.addr, servers.root_token)
    for path in servers.creds_paths.values():
        for _ in range(WARM_UP_CALLS):
            cycle(agent, root, path)
    latency = measure_latency(agent, root, servers, args.rounds, args.calls)
    report_latency(latency, args.rounds, args.calls)
    rates = {
        clients: measure_throughput(servers, clients, args.cycles, args.runs)
        for clients in (1, 8)
    }
    report_throughput(rates, args.cycles)
    floors = measure_floors(agent, servers, args.calls)
    report_floors(floors)
    cpu = measure_cpu(servers, args.cpu_reads)
    report_cpu(cpu, args.cpu_reads)
    summary = _summary(latency, rates, floors)
    summary["cpu_ms_per_creds_read"] = {
        engine: {group: round(statistics.median(v), 3) for group, v in groups.items()}
        for engine, groups in cpu.items()
    }
    print(json.dumps(summary))


def cycle(agent: VaultHttp, root: VaultHttp, creds_path: str) -> tuple[float, float]:
    """Read creds, then revoke the lease synchronously; return both times in ms."""
    started = time.perf_counter()
    lease_id = agent.call("GET", creds_path)["lease_id"]
    read = time.perf_counter()
    root.call("PUT", "sys/leases/revoke", {"lease_id": lease_id, "sync": True})
    revoked = time.perf_counter()
    return (read - started) * 1000, (revoked - read) * 1000


def measure_latency(
    agent: VaultHttp, root: VaultHttp, servers: Servers, rounds: int, calls: int
) -> Latency:
    engines = list(servers.creds_paths)
    samples: Latency = {e: {op: [] for op in OPERATIONS} for e in engines}
    for _ in range(rounds):
        for per_operation in samples.values():
            for runs in per_operation.values():
                runs.append([])
        for call in range(calls):
            for engine in _rotated(engines, call):
                times = cycle(agent, root, servers.creds_paths[engine])
                for operation, elapsed in zip(OPERATIONS, times, strict=True):
                    samples[engine][operation][-1].append(elapsed)
    return samples


def measure_throughput(
    servers: Servers, clients: int, cycles: int, runs: int
) -> dict[str, list[float]]:
    """Return cycles per second of each engine, one value per run."""
    engines = list(servers.creds_paths)
    rates: dict[str, list[float]] = {engine: [] for engine in engines}
    for run in range(runs):
        for engine in _rotated(engines, run):
            path = servers.creds_paths[engine]
            rates[engine].append(_concurrent_rate(servers, path, clients, cycles))
    return rates


def _rotated(engines: list[str], shift: int) -> list[str]:
    """Return the engines in an order that changes each call.

    Rotating spreads any cost of going first or last evenly over them.
    """
    shift %= len(engines)
    return engines[shift:] + engines[:shift]


def _concurrent_rate(servers: Servers, path: str, clients: int, cycles: int) -> float:
    share = cycles // clients
    pairs = [
        (
            VaultHttp(servers.addr, servers.agent_token),
            VaultHttp(servers.addr, servers.root_token),
        )
        for _ in range(clients)
    ]
    start = threading.Barrier(clients + 1)

    def work(agent: VaultHttp, root: VaultHttp) -> None:
        start.wait()
        for _ in range(share):
            cycle(agent, root, path)

    threads = [threading.Thread(target=work, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for agent, root in pairs:
        agent.close()
        root.close()
    return share * clients / elapsed


def measure_floors(
    agent: VaultHttp, servers: Servers, calls: int
) -> dict[str, list[float]]:
    """Time what every creds read pays, apart from the engines' own work."""
    floors: dict[str, list[float]] = {"CREATE ROLE with password, direct": []}
    with psycopg.connect(**servers.pg_conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
        for _ in range(calls):
            name = f"bench_floor_{secrets.token_hex(6)}"
            statement = f"CREATE ROLE {name} LOGIN PASSWORD '{secrets.token_hex(16)}'"
            started = time.perf_counter()
            conn.execute(statement.encode())
            floors["CREATE ROLE with password, direct"].append(
                (time.perf_counter() - started) * 1000
            )
            conn.execute(f"DROP ROLE {name}".encode())
    for engine, path in servers.creds_paths.items():
        unknown = path.rsplit("/", 1)[0] + "/no-such-role"
        floors[f"unknown role read, {engine}"] = [
            _timed_failure(agent, unknown) for _ in range(calls)
        ]
    return floors


def _timed_failure(client: VaultHttp, path: str) -> float:
    started = time.perf_counter()
    try:
        client.call("GET", path)
    except RuntimeError:
        return (time.perf_counter() - started) * 1000
    raise RuntimeError(f"GET {path} succeeded; expected an unknown role error")


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    deciles = statistics.quantiles(values, n=10)
    return statistics.median(values), deciles[0], deciles[-1]


def report_latency(latency: Latency, rounds: int, calls: int) -> None:
    print(f"latency: {rounds} rounds x {calls} calls per engine, interleaved; ms")
    header = ("operation", "engine", "median", "p10", "p90", "round medians")
    print("{:<9} {:<13} {:>7} {:>7} {:>7}  {}".format(*header))
    for operation in OPERATIONS:
        for engine, per_operation in latency.items():
            per_round = per_operation[operation]
            median, p10, p90 = _percentiles([v for r in per_round for v in r])
            medians = [statistics.median(r) for r in per_round]
            spread = f"{min(medians):.2f}-{max(medians):.2f}"
            row = (operation, engine, median, p10, p90, spread)
            print("{:<9} {:<13} {:7.2f} {:7.2f} {:7.2f}  {}".format(*row))
    for name, ratio in _latency_ratios(latency).items():
        print(f"ratio of medians, {name}: {ratio:.2f}")


def _comparisons(engines: list[str]) -> list[tuple[str, str]]:
    """Return the (engine, reference) pairs whose ratios are reported."""
    pairs = [(engine, "built-in") for engine in engines if engine != "built-in"]
    if "baseline" in engines:
        pairs.append(("agent-bridge", "baseline"))
    return pairs


def _latency_ratios(latency: Latency) -> dict[str, float]:
    def median_of(engine: str, operation: str) -> float:
        return statistics.median(v for r in latency[engine][operation] for v in r)

    return {
        f"{op} {engine} / {reference}": median_of(engine, op) / median_of(reference, op)
        for engine, reference in _comparisons(list(latency))
        for op in OPERATIONS
    }


def report_throughput(rates: Rates, cycles: int) -> None:
    print(f"\nthroughput: creds + revoke cycles per second, {cycles} cycles a run")
    for clients, per_engine in rates.items():
        parts = [
            f"{engine} {statistics.median(r):6.1f} ({min(r):.1f}-{max(r):.1f})"
            for engine, r in per_engine.items()
        ]
        print(f"{clients} client(s): {'  '.join(parts)}")
        for engine, reference in _comparisons(list(per_engine)):
            ratio = statistics.median(per_engine[engine]) / statistics.median(
                per_engine[reference]
            )
            print(f"  ratio {engine} / {reference}: {ratio:.2f}")


def report_floors(floors: dict[str, list[float]]) -> None:
    print("\nfloors: ms")
    for name, values in floors.items():
        median, p10, p90 = _percentiles(values)
        print(f"{name:<36} {median:7.2f} {p10:7.2f} {p90:7.2f}")


def _summary(
    latency: Latency, rates: Rates, floors: dict[str, list[float]]
) -> dict[str, Any]:
    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    return {
        "latency_median_ms": {
            engine: {
                op: median_ms([v for r in rounds for v in r])
                for op, rounds in per_operation.items()
            }
            for engine, per_operation in latency.items()
        },
        "latency_ratio": _latency_ratios(latency),
        "throughput_per_s": {
            clients: {e: round(statistics.median(r), 1) for e, r in per_engine.items()}
            for clients, per_engine in rates.items()
        },
        "floor_median_ms": {name: median_ms(v) for name, v in floors.items()},
    }


if __name__ == "__main__":
    main()
