"""CPU time of each process group per creds read, for bench_database.

The wall time of a creds read hides where the machine's CPU goes: on a
2-core machine OpenBao, the plugin and PostgreSQL compete for it, so CPU
saved anywhere shortens every read. Each engine reads `reads` credentials
in a row. The CPU time of OpenBao, the plugin processes, PostgreSQL's
processes and this process is sampled before and after. The leases are
revoked afterwards, outside the measurement.
"""

from __future__ import annotations

import statistics
import time

import psutil

from bench_database_setup import Servers, VaultHttp

GROUPS = ("openbao", "plugin", "postgres", "client")
# engine -> group -> CPU ms per read, one value per round
CpuShares = dict[str, dict[str, list[float]]]


def measure_cpu(servers: Servers, reads: int, rounds: int = 2) -> CpuShares:
    """Return the CPU ms per creds read of each process group, per engine."""
    agent = VaultHttp(servers.addr, servers.agent_token)
    root = VaultHttp(servers.addr, servers.root_token)
    engines = list(servers.creds_paths)
    shares: CpuShares = {e: {g: [] for g in GROUPS} for e in engines}
    for round_index in range(rounds):
        shift = round_index % len(engines)
        for engine in engines[shift:] + engines[:shift]:
            before = _cpu_by_group(servers)
            leases = [
                agent.call("GET", servers.creds_paths[engine])["lease_id"]
                for _ in range(reads)
            ]
            # Work a mint defers until after its response is part of its cost.
            time.sleep(0.2)
            after = _cpu_by_group(servers)
            for group in GROUPS:
                spent = after[group] - before.get(group, 0.0)
                shares[engine][group].append(spent * 1000 / reads)
            for lease_id in leases:
                root.call(
                    "PUT", "sys/leases/revoke", {"lease_id": lease_id, "sync": True}
                )
    agent.close()
    root.close()
    return shares


def report_cpu(shares: CpuShares, reads: int) -> None:
    print(f"\nCPU per creds read: ms, median of rounds of {reads} reads")
    print(
        "{:<13} ".format("engine") + " ".join(f"{g:>9}" for g in GROUPS) + "     total"
    )
    for engine, per_group in shares.items():
        medians = [statistics.median(per_group[g]) for g in GROUPS]
        cells = " ".join(f"{m:9.2f}" for m in medians)
        print(f"{engine:<13} {cells} {sum(medians):9.2f}")


def _cpu_by_group(servers: Servers) -> dict[str, float]:
    """Return the CPU seconds used so far by each group's live processes."""
    openbao = psutil.Process(servers.openbao_pid)
    postmaster = psutil.Process(servers.pg_pid)
    members = {
        "openbao": [openbao],
        "plugin": openbao.children(recursive=True),
        "postgres": [postmaster, *postmaster.children(recursive=True)],
        "client": [psutil.Process()],
    }
    return {group: _cpu_seconds(processes) for group, processes in members.items()}


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue  # a PostgreSQL backend that ended between listing and reading
        total += times.user + times.system
    return total
