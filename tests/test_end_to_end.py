"""The main job on the embedded stack: agent-exec gives psql a per-call role.

Everything here is real: the attestor daemon on its socket, OpenBao with the
built plugin registered by sha256, and a scram-sha-256 PostgreSQL cluster.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import StackState

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
STRANGER = "ab-stranger"
# Another user cannot run the virtualenv's interpreter when it lives under a
# private home. The attestor client and agent-exec need only the standard
# library, so the stranger runs them with the system interpreter.
SYSTEM_PYTHON = "/usr/bin/python3"


def agent_env(stack: StackState) -> dict[str, str]:
    """An agent's environment: the attestor socket and Vault's address only."""
    return {
        "PATH": os.environ["PATH"],
        "VAULT_ADDR": stack.vault_addr,
        "AGENT_ATTESTOR_SOCKET": stack.attestor_socket,
    }


def run_agent_exec(
    stack: StackState, *command: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "agent-exec"), "--json", "--role", "demo-readonly", "--"]
    return subprocess.run(
        [*argv, *command],
        env=agent_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        user=user,
    )


def audit_record(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The last stderr line of `agent-exec --json` is the call's audit record."""
    record: dict[str, Any] = json.loads(result.stderr.strip().splitlines()[-1])
    return record


def role_exists(stack: StackState, name: str) -> bool:
    with psycopg.connect(
        host="127.0.0.1",
        port=stack.pg_port,
        user=stack.pg_user,
        password=stack.pg_password,
        dbname="postgres",
    ) as conn:
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        return row.fetchone() is not None


def vault_status(stack: StackState, method: str, path: str, body: Any) -> int:
    """Status code of one root-token request to the stack's OpenBao."""
    return vault_call(stack, method, path, body)[0]


def vault_call(stack: StackState, method: str, path: str, body: Any) -> tuple[int, str]:
    """Status code and body of one root-token request to the stack's OpenBao."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the stack's own loopback address
        f"{stack.vault_addr}/v1/{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"X-Vault-Token": stack.root_token},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("default_ttl", "banana"),
        ("max_ttl", "-5"),
        ("allowed_agents", {"not": "a list"}),
    ],
)
def test_invalid_role_field_is_400(stack: StackState, field: str, value: Any) -> None:
    body = {"db_name": "demo", "creation_statements": ["SELECT 1"], field: value}
    status, text = vault_call(stack, "PUT", "agent-creds/database/roles/invalid", body)
    assert status == 400, text
    assert field in text
    status, _ = vault_call(stack, "GET", "agent-creds/database/roles/invalid", None)
    assert status == 404  # nothing was written


def test_psql_runs_with_its_own_role(stack: StackState) -> None:
    # The role must exist while the command runs: psql reads its own row.
    result = run_agent_exec(
        stack,
        "psql",
        "-Atc",
        "select rolname from pg_roles where rolname = current_user",
    )
    assert result.returncode == 0, result.stderr
    user = result.stdout.strip()
    assert user.startswith("v-dev-demo-readonly-")

    record = audit_record(result)
    assert record["exit_code"] == 0
    assert record["revocation"]["ok"] is True
    assert not role_exists(stack, user)

    (lease_id,) = record["lease_ids"]
    lease_status = vault_status(
        stack, "PUT", "sys/leases/lookup", {"lease_id": lease_id}
    )
    assert lease_status == 400  # "invalid lease": the lease is gone
    token_status = vault_status(
        stack,
        "POST",
        "auth/token/lookup-accessor",
        {"accessor": record["token_accessor"]},
    )
    assert token_status == 400  # "invalid accessor": the token is gone


def test_orders_query_sees_demo_rows(stack: StackState) -> None:
    result = run_agent_exec(stack, "psql", "-Atc", "select count(*) from orders")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4"


def test_child_exit_code_passes_through(stack: StackState) -> None:
    result = run_agent_exec(stack, "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert audit_record(result)["revocation"]["ok"] is True


def test_wrong_password_is_rejected(stack: StackState) -> None:
    script = 'PGPASSWORD=wrong-password psql -Atc "select 1" 2>&1; echo "rc=$?"'
    result = run_agent_exec(stack, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "password authentication failed" in result.stdout
    assert "rc=2" in result.stdout


def test_child_cannot_connect_as_superuser(stack: StackState) -> None:
    script = f'PGUSER={stack.pg_user} psql -Atc "select 1" 2>&1; echo "rc=$?"'
    result = run_agent_exec(stack, "sh", "-c", script)
    assert "password authentication failed" in result.stdout
    assert "rc=2" in result.stdout


@pytest.fixture(scope="module")
def stranger() -> str:
    """A non-root user that no agent of the stack declares."""
    try:
        pwd.getpwnam(STRANGER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", STRANGER],
            check=True,
        )
    return STRANGER


def run_as_stranger(
    stack: StackState, stranger: str, code: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", code],
        env={**agent_env(stack), "PYTHONPATH": str(ROOT)},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        user=stranger,
    )


def test_undeclared_user_gets_no_jwt(stack: StackState, stranger: str) -> None:
    code = (
        "import os\n"
        "from attestor.client import AttestorError, request_token\n"
        "try:\n"
        "    request_token(os.environ['AGENT_ATTESTOR_SOCKET'])\n"
        "except AttestorError as err:\n"
        "    print(err.code, err)\n"
    )
    result = run_as_stranger(stack, stranger, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no_matching_agent ")
    assert "no agent matches process" in result.stdout


def test_undeclared_user_mints_nothing(stack: StackState, stranger: str) -> None:
    code = (
        "import sys\n"
        "from attestor.agent_exec import main\n"
        "sys.argv = ['agent-exec', '--role', 'demo-readonly', '--', 'true']\n"
        "sys.exit(main())\n"
    )
    result = run_as_stranger(stack, stranger, code)
    assert result.returncode == 77, result.stderr  # denied
    assert "no agent matches process" in result.stderr


def test_escaped_descendant_gets_no_jwt(stack: StackState, tmp_path: Path) -> None:
    # The subshell exits at once, orphaning the setsid'd Python client:
    # with agent-exec as its subreaper, agent-exec stays its ancestor.
    out = tmp_path / "escaped.txt"
    code = (
        "import os, time\n"
        "from attestor.client import AttestorError, request_token\n"
        "time.sleep(0.5)\n"
        "try:\n"
        "    request_token(os.environ['SOCKET'])\n"
        "    print('issued', os.getppid())\n"
        "except AttestorError as err:\n"
        "    print(err.code, os.getppid(), err)\n"
    )
    script = f'(setsid "$PY" -c "$CODE" > {out} 2>&1 &); sleep 3'
    result = subprocess.run(
        [str(BIN / "agent-exec"), "--role", "demo-readonly", "--", "sh", "-c", script],
        env={
            **agent_env(stack),
            "PY": sys.executable,
            "CODE": code,
            "SOCKET": stack.attestor_socket,
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("no_matching_agent "), text
    assert "descends from agent-exec" in text


def test_escaped_descendant_is_killed(stack: StackState, tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    script = f"(setsid sh -c 'echo $$ > {pid_file}; exec sleep 60' &); sleep 0.5"
    result = run_agent_exec(stack, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
