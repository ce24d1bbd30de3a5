"""Measure what agent-exec adds to one tool call, on the embedded stack.

Four ways to run `true` are timed in interleaved rounds, so a slow moment of
the machine hits every variant alike:

- `true` alone: the cost of starting any process;
- `agent-exec --role demo-readonly -- true`;
- a shell script doing the same with the `bao` CLI: JWT from
  `agent-attestor token`, login, creds read, `true`, lease revoke, token
  revoke;
- the server-side floor: the same requests from this process over one
  kept-alive connection, with no process start-up at all.

Reported: median and the 10th-90th percentile spread of each, in ms, and the
ratios that matter. `--state-dir` reuses a running stack (`.stack` of
`scripts/dev-stack up`); without it a throwaway stack is started and stopped.
`--compare REV` adds agent-exec built from git revision REV as a fifth
variant, so a change is measured against its base in the same rounds.

By default agent-exec runs from a regular (non-editable) install of this
checkout's wheel in a scratch virtualenv, as production installs are, with
bytecode compiled by pip. `--install editable` times the project's own
virtualenv instead, whose editable install adds an import hook to every
start-up.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attestor
from attestor.agent_exec.vault import VaultClient
from attestor.client import request_token
from devstack import stack
from devstack.openbao import bao_binary

ROLE = "demo-readonly"
CREDS = f"agent-creds/database/creds/{ROLE}"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent

BAO_SCRIPT = """\
set -eu
jwt=$(agent-attestor token)
VAULT_TOKEN=$(printf %s "$jwt" | bao write -field=token auth/jwt/login role=dev jwt=-)
export VAULT_TOKEN
creds=$(bao read -format=json "$CREDS")
lease_id=$(printf %s "$creds" | sed -n 's/.*"lease_id": "\\([^"]*\\)".*/\\1/p')
true
bao write -f "sys/leases/revoke/$lease_id" sync=true >/dev/null
bao token revoke -self >/dev/null
"""


def main() -> None:
    args = _parse_args()
    if args.state_dir:
        state = stack.load(args.state_dir.resolve())
        if state is None:
            sys.exit(f"no stack recorded in {args.state_dir}; run scripts/dev-stack up")
        _run(state, args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-agent-exec-") as folder:
        state = stack.up(Path(folder))
        try:
            _run(state, args)
        finally:
            stack.down(Path(folder))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=30,
        help="number of interleaved rounds (default: 30)",
    )
    parser.add_argument(
        "--state-dir", type=Path, help="reuse the stack recorded in this folder"
    )
    parser.add_argument(
        "--install",
        choices=("regular", "editable"),
        default="regular",
        help="time agent-exec from a scratch regular install or from the "
        "project's editable one (default: regular)",
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also time agent-exec built from git revision REV (a regular "
        "install), in the same interleaved rounds",
    )
    return parser.parse_args()


def _run(state: stack.StackState, args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack_of_installs:
        agent_exec = stack_of_installs.enter_context(_agent_exec_binary(args.install))
        print(f"agent-exec: {agent_exec} ({args.install} install)")
        compared: dict[str, str] = {}
        if args.compare:
            source = stack_of_installs.enter_context(_git_checkout(args.compare))
            binary = stack_of_installs.enter_context(_regular_install(source))
            compared[f"@{args.compare}"] = binary
            print(f"agent-exec@{args.compare}: {binary} (regular install)")
        _run_rounds(state, args.rounds, agent_exec, compared)


@contextlib.contextmanager
def _agent_exec_binary(install: str) -> Iterator[str]:
    """Yield the agent-exec console script of the requested kind of install."""
    if install == "editable":
        # A wheel ships bytecode, but this checkout may run with
        # PYTHONDONTWRITEBYTECODE, which would recompile on every call.
        compileall.compile_dir(Path(attestor.__file__).parent, quiet=1)
        yield str(BIN / "agent-exec")
        return
    with _regular_install(ROOT) as binary:
        yield binary


@contextlib.contextmanager
def _regular_install(source: Path) -> Iterator[str]:
    """Yield agent-exec from a wheel of `source` installed in a scratch virtualenv."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-exec-venv-") as folder:
        scratch = Path(folder)
        pip = [sys.executable, "-m", "pip", "--quiet"]
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", folder, source],
            check=True,
        )
        base_python = Path(sys.base_prefix) / "bin" / "python3"
        venv = scratch / "venv"
        subprocess.run([base_python, "-m", "venv", "--without-pip", venv], check=True)
        wheel = next(scratch.glob("agent_bridge-*.whl"))
        # agent-exec needs only the standard library, hence --no-deps.
        subprocess.run(
            [*pip, "--python", venv / "bin" / "python", "install", "--no-deps", wheel],
            check=True,
        )
        yield str(venv / "bin" / "agent-exec")


@contextlib.contextmanager
def _git_checkout(revision: str) -> Iterator[Path]:
    """Yield a folder containing this repository's files at `revision`."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-exec-src-") as folder:
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", revision],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)


def _run_rounds(
    state: stack.StackState,
    rounds: int,
    agent_exec: str,
    compared: dict[str, str],
) -> None:
    env = _agent_env(state)
    variants: dict[str, Callable[[], float]] = {
        "true": lambda: _timed(["true"], env),
        "agent-exec": lambda: _timed([agent_exec, "--role", ROLE, "--", "true"], env),
        "bao script": lambda: _timed(["sh", "-c", BAO_SCRIPT], env),
        "server-side": lambda: _server_side(state),
    }
    for suffix, binary in compared.items():
        argv = [binary, "--role", ROLE, "--", "true"]
        variants[f"agent-exec{suffix}"] = functools.partial(_timed, argv, env)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm the page cache and the servers
        run()
    for index in range(rounds):
        order = list(variants)
        shift = index % len(order)
        for name in order[shift:] + order[:shift]:
            samples[name].append(variants[name]())
    _report(samples, rounds)


def _agent_env(state: stack.StackState) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    bao_dir = str(bao_binary().parent)
    env.update(
        PATH=f"{BIN}:{bao_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        VAULT_ADDR=state.vault_addr,
        AGENT_ATTESTOR_SOCKET=state.attestor_socket,
        CREDS=CREDS,
    )
    return env


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def _server_side(state: stack.StackState) -> float:
    """Time the call's requests from this process: no interpreter or CLI start-up."""
    started = time.perf_counter()
    issued = request_token(state.attestor_socket)
    vault = VaultClient(state.vault_addr)
    login = vault.login_jwt("jwt", issued.agent, issued.token)
    vault.capabilities([CREDS, CREDS.replace("/database/", "/aws/")])
    lease = vault.read_creds(CREDS)
    vault.revoke_lease(lease.lease_id)
    vault.lease_exists(lease.lease_id)
    vault.revoke_self()
    vault.close()
    assert login.accessor
    return (time.perf_counter() - started) * 1000


def _report(samples: dict[str, list[float]], rounds: int) -> None:
    print(f"{rounds} interleaved rounds; wall time per call in ms")
    width = max(12, *(len(name) for name in samples))
    print(f"{'variant':<{width}} {'median':>8} {'p10':>8} {'p90':>8}")
    medians = {}
    for name, values in samples.items():
        deciles = statistics.quantiles(values, n=10)
        medians[name] = statistics.median(values)
        print(
            f"{name:<{width}} {medians[name]:8.1f} {deciles[0]:8.1f} {deciles[-1]:8.1f}"
        )
    print()
    print("ratios of medians")
    agent_exec = medians["agent-exec"]
    ratios = {
        "agent-exec / true": agent_exec / medians["true"],
        "bao script / agent-exec": medians["bao script"] / agent_exec,
    }
    for name, median in medians.items():
        if name.startswith("agent-exec"):
            ratios[f"{name} / server-side"] = median / medians["server-side"]
    label_width = max(len(label) for label in ratios)
    for label, ratio in ratios.items():
        print(f"{label:<{label_width}}  {ratio:6.2f}x")
    overhead = agent_exec - medians["server-side"] - medians["true"]
    print(f"agent-exec overhead over server-side + true: {overhead:.1f} ms")
    print(json.dumps({"rounds": rounds, "median_ms": medians}))


if __name__ == "__main__":
    main()
