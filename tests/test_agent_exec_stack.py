"""agent-exec end to end: the real attestor, OpenBao, plugin and PostgreSQL.

The session's `stack` fixture runs everything on 127.0.0.1 with the agent
`dev` and its role `demo-readonly`. Each test checks the credential from
both sides: inside the command (what it can do) and from the administrator's
view afterwards (the PostgreSQL role, the Vault lease and the token are gone).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hvac
import psycopg
import pytest

pytestmark = pytest.mark.stack

AGENT_EXEC = str(Path(sys.executable).parent / "agent-exec")
CREDS_PREFIX = "agent-creds/database/creds/demo-readonly/"
WHOAMI = "psql -Atc 'select current_user'"


@pytest.fixture
def admin(stack: Any) -> hvac.Client:
    return hvac.Client(url=stack.vault_addr, token=stack.root_token)


@pytest.fixture
def pg(stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(
        host="127.0.0.1",
        port=stack.pg_port,
        user=stack.pg_user,
        password=stack.pg_password,
        dbname="demo",
        autocommit=True,
    ) as conn:
        yield conn


def agent_env(stack: Any, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VAULT_", "PG", "AWS_"))
    }
    env.update(VAULT_ADDR=stack.vault_addr, AGENT_ATTESTOR_SOCKET=stack.attestor_socket)
    env.update(extra)
    return env


def run_exec(stack: Any, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT_EXEC, *args],
        env=agent_env(stack, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start_exec(stack: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AGENT_EXEC, *args],
        env=agent_env(stack),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def live_leases(admin: hvac.Client, prefix: str = CREDS_PREFIX) -> list[str]:
    try:
        listing = admin.adapter.request("LIST", f"v1/sys/leases/lookup/{prefix}")
    except hvac.exceptions.InvalidPath:
        return []
    return [prefix + key for key in listing["data"]["keys"]]


def role_exists(pg: psycopg.Connection[Any], name: str) -> bool:
    row = pg.execute(
        "select count(*) from pg_roles where rolname = %s", (name,)
    ).fetchone()
    return row is not None and row[0] == 1


def accessor_alive(admin: hvac.Client, accessor: str) -> bool:
    try:
        admin.auth.token.lookup_accessor(accessor)
    except hvac.exceptions.InvalidRequest:
        return False  # "invalid accessor": revoked or expired
    return True


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def audit_record(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert isinstance(record, dict)
    return record


def test_role_lives_only_during_call(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any]
) -> None:
    before = live_leases(admin)
    script = f"{WHOAMI}; read done"
    with start_exec(
        stack, "--json", "--role", "demo-readonly", "--", "sh", "-c", script
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        user = proc.stdout.readline().strip()
        assert user.startswith("v-dev-")
        assert role_exists(pg, user)
        assert len(live_leases(admin)) == len(before) + 1
        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None
        record = json.loads(proc.stderr.read().strip().splitlines()[-1])

    assert not role_exists(pg, user)
    assert live_leases(admin) == before
    assert not accessor_alive(admin, record["token_accessor"])
    assert record["revocation"]["ok"] is True


def test_environment_scrubbed_on_stack(stack: Any) -> None:
    script = "env; sleep 2 & sleep 0.3; tr '\\0' '\\n' < /proc/$!/environ; wait"
    result = run_exec(
        stack,
        "--role",
        "demo-readonly",
        "--",
        "sh",
        "-c",
        script,
        VAULT_TOKEN=stack.root_token,
        PGPASSWORD=stack.pg_password,
        AWS_SECRET_ACCESS_KEY="inherited-aws-secret",
    )
    assert result.returncode == 0, result.stderr
    assert stack.root_token not in result.stdout
    assert stack.pg_password not in result.stdout
    assert "inherited-aws-secret" not in result.stdout
    assert stack.attestor_socket not in result.stdout
    assert "VAULT_ADDR" not in result.stdout
    assert "eyJ" not in result.stdout  # the header of every JWT
    assert result.stdout.count("PGPASSWORD=") == 2


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "kill -9 $$"], 137),
        (["no-such-command-7f3a"], 127),
    ],
)
def test_exit_codes_on_stack(
    stack: Any, admin: hvac.Client, command: list[str], expected: int
) -> None:
    before = live_leases(admin)
    result = run_exec(stack, "--role", "demo-readonly", "--", *command)
    assert result.returncode == expected, result.stderr
    assert live_leases(admin) == before


def test_sigterm_trap_exit_code_on_stack(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any]
) -> None:
    script = f'trap "exit 7" TERM; {WHOAMI}; while :; do sleep 0.1; done'
    with start_exec(stack, "--role", "demo-readonly", "--", "sh", "-c", script) as proc:
        assert proc.stdout is not None
        user = proc.stdout.readline().strip()
        assert role_exists(pg, user)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 7
    assert not role_exists(pg, user)


def test_policy_denied_role_mints_nothing(stack: Any, admin: hvac.Client) -> None:
    before = live_leases(admin)
    result = run_exec(
        stack,
        "--json",
        "--role",
        "database/demo-readonly",
        "--role",
        "aws/deploy",
        "--",
        "true",
    )
    assert result.returncode == 77
    assert "not allowed" in result.stderr
    record = audit_record(result)
    assert record["policy"]["decision"] == "denied"
    assert record["lease_ids"] == []
    assert live_leases(admin) == before


@contextmanager
def extra_policy_rule(admin: hvac.Client, path: str, capability: str) -> Iterator[None]:
    """Give agent `dev` one capability on `path`, for one test.

    The policy may be JSON or HCL. A `deny` wins over the policy's own rule
    for the same path in both.
    """
    original = admin.sys.read_policy("agent-dev")["data"]["rules"]
    if original.lstrip().startswith("{"):
        rules = json.loads(original)
        rules["path"][path] = {"capabilities": [capability]}
        extended = json.dumps(rules)
    else:
        extended = original + f'\npath "{path}" {{ capabilities = ["{capability}"] }}\n'
    admin.sys.create_or_update_policy("agent-dev", extended)
    try:
        yield
    finally:
        admin.sys.create_or_update_policy("agent-dev", original)


def extra_read_grant(admin: hvac.Client, path: str) -> AbstractContextManager[None]:
    """Let agent `dev` read `path` too, for one test."""
    return extra_policy_rule(admin, path, "read")


def test_second_role_failing_revokes_first(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any]
) -> None:
    marker = Path(stack.state_dir) / "exec-test-ran"
    with extra_read_grant(admin, "agent-creds/aws/creds/exec-test-missing"):
        result = run_exec(
            stack,
            "--json",
            "--role",
            "database/demo-readonly",
            "--role",
            "aws/exec-test-missing",
            "--",
            "touch",
            str(marker),
        )
    # The policy grants the read, and the plugin returns 400 for the role it
    # lacks, which is an invalid request, not a denial.
    assert result.returncode == 64, result.stderr
    assert "unknown role 'exec-test-missing'" in result.stderr
    assert "allowed_agents" not in result.stderr
    assert not marker.exists()
    record = audit_record(result)
    assert len(record["lease_ids"]) == 1
    assert record["revocation"]["leases_revoked"] == record["lease_ids"]
    assert record["lease_ids"][0] not in live_leases(admin)


@pytest.mark.parametrize(
    "roles",
    [
        ["demo-readonly", "database/demo-readonly"],
        ["database/demo-readonly", "demo-readonly", "demo-readonly"],
    ],
)
def test_same_role_twice_on_stack(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], roles: list[str]
) -> None:
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    options = [option for role in roles for option in ("--role", role)]
    result = run_exec(stack, "--json", *options, "--", "sh", "-c", WHOAMI)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("v-dev-demo-readonly-")
    record = audit_record(result)
    assert record["roles"] == ["database/demo-readonly"]
    assert len(record["lease_ids"]) == 1
    assert record["revocation"]["leases_revoked"] == record["lease_ids"]
    assert database_users(pg) == users_before
    assert live_leases(admin) == leases_before


def test_sigkill_of_agent_exec_on_stack(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any]
) -> None:
    before = live_leases(admin)
    script = f"{WHOAMI}; sleep 60 & echo $!; wait"
    with start_exec(stack, "--role", "demo-readonly", "--", "sh", "-c", script) as proc:
        assert proc.stdout is not None
        user = proc.stdout.readline().strip()
        grandchild = int(proc.stdout.readline())
        assert role_exists(pg, user)
        killed_at = time.monotonic()
        proc.kill()
        proc.wait(timeout=10)
    assert eventually(lambda: not role_exists(pg, user), timeout=10)
    assert time.monotonic() - killed_at < 10
    assert eventually(lambda: live_leases(admin) == before)
    assert eventually(
        lambda: (
            not Path(f"/proc/{grandchild}/cmdline").exists()
            or Path(f"/proc/{grandchild}/cmdline").read_bytes() == b""
        )
    )


def test_audit_record_matches_vault(stack: Any) -> None:
    result = run_exec(
        stack,
        "--json",
        "--role",
        "demo-readonly",
        "--tool",
        "psql",
        "--on-behalf-of",
        "alice@example.com",
        "--",
        "sh",
        "-c",
        WHOAMI,
    )
    assert result.returncode == 0, result.stderr
    record = audit_record(result)
    assert record["agent"] == "dev"
    assert record["attested"]["uid"] == str(os.getuid())
    assert record["asserted"] == {"tool": "psql", "on_behalf_of": "alice@example.com"}
    assert record["policy"]["decision"] == "allowed"
    assert "agent-dev" in record["policy"]["token_policies"]
    audit_log = Path(stack.state_dir) / "openbao" / "audit.log"
    assert record["token_accessor"] in audit_log.read_text()
    assert record["call_id"] in audit_log.read_text()


def test_lease_lookup_logged_as_confirmation(stack: Any) -> None:
    result = run_exec(stack, "-vv", "--json", "--role", "demo-readonly", "--", "true")
    assert result.returncode == 0, result.stderr
    record = audit_record(result)
    lease_id = record["lease_ids"][0]
    assert "sys/leases/lookup returned 400" not in result.stderr
    assert f"lease {lease_id} is gone" in result.stderr
    assert "invalid lease" in result.stderr
    # The lookup is still sent, with the call's token, after the revoke.
    audit_log = Path(stack.state_dir) / "openbao" / "audit.log"
    lookups = [
        entry
        for entry in map(json.loads, audit_log.read_text().splitlines())
        if entry["type"] == "response"
        and entry["request"]["path"] == "sys/leases/lookup"
        and entry.get("auth", {}).get("accessor") == record["token_accessor"]
    ]
    assert len(lookups) == 1


def test_assertion_limits_match_attestor(stack: Any) -> None:
    # agent-exec rejects what the attestor would reject, so the longest value
    # it accepts, here in non-ASCII characters, the attestor accepts too.
    longest = "é" * 256
    accepted = run_exec(
        stack, "--json", "--role", "demo-readonly", "--tool", longest, "--", "true"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert audit_record(accepted)["asserted"] == {"tool": longest}

    rejected = run_exec(
        stack, "--role", "demo-readonly", "--tool", longest + "é", "--", "true"
    )
    assert rejected.returncode == 64
    assert "the attestor accepts at most 256" in rejected.stderr


@contextmanager
def short_ttls(admin: hvac.Client, seconds: int) -> Iterator[None]:
    """Give the JWT role's tokens and demo-readonly's leases a TTL of `seconds`."""
    token_ttl = admin.read("auth/jwt/role/dev")["data"]["token_ttl"]
    role = admin.read("agent-creds/database/roles/demo-readonly")["data"]
    # OpenBao 2.7 treats a JWT role update without role_type as an oidc role.
    admin.write("auth/jwt/role/dev", role_type="jwt", token_ttl=seconds)
    admin.write(
        "agent-creds/database/roles/demo-readonly", **{**role, "default_ttl": seconds}
    )
    try:
        yield
    finally:
        admin.write("auth/jwt/role/dev", role_type="jwt", token_ttl=token_ttl)
        admin.write("agent-creds/database/roles/demo-readonly", **role)


def test_renewal_outlives_short_ttls(stack: Any, admin: hvac.Client) -> None:
    with short_ttls(admin, 3):
        result = run_exec(
            stack,
            "--json",
            "--role",
            "demo-readonly",
            "--",
            "sh",
            "-c",
            "sleep 7; psql -Atc 'select 42'",
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    record = audit_record(result)
    assert record["revocation"]["ok"] is True


class CredsDelayProxy(BaseHTTPRequestHandler):
    """Forward requests to Vault, holding some responses for `delay` seconds.

    The responses held are those whose path contains `held_path`, by default
    every creds response. The creds request reaches Vault at once, so the
    plugin creates the user before the proxy's hold begins;
    `creds_sent_upstream` is set then.
    """

    protocol_version = "HTTP/1.1"
    upstream = ""
    address = ""
    held_path = "/creds/"
    delay = 1.0
    creds_sent_upstream = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in ("host", "connection", "content-length")
        }
        upstream = http.client.HTTPConnection(self.upstream, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if self.held_path in self.path:
            type(self).creds_sent_upstream.set()
            time.sleep(self.delay)
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()


@contextmanager
def creds_delay_proxy(
    vault_addr: str, held_path: str = "/creds/"
) -> Iterator[type[CredsDelayProxy]]:
    class Handler(CredsDelayProxy):
        upstream = urlsplit(vault_addr).netloc
        creds_sent_upstream = threading.Event()

    Handler.held_path = held_path

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.address = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def database_users(pg: psycopg.Connection[Any]) -> set[str]:
    rows = pg.execute("select rolname from pg_roles where rolname like 'v-%'")
    return {row[0] for row in rows.fetchall()}


def signal_while_held(
    stack: Any, proxy: type[CredsDelayProxy], args: list[str], signum: int
) -> tuple[int, str]:
    """Run agent-exec through `proxy` and send `signum` while it delays a response.

    Return agent-exec's exit code and stderr.
    """
    with subprocess.Popen(
        [AGENT_EXEC, *args],
        env=agent_env(stack, VAULT_ADDR=proxy.address),
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proxy.creds_sent_upstream.wait(timeout=30)
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
        assert proc.stderr is not None
        return code, proc.stderr.read()


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1]
)
def test_signal_during_creds_read_revokes(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], signum: int
) -> None:
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    args = ["--json", "--role", "demo-readonly", "--", "true"]
    with creds_delay_proxy(stack.vault_addr) as proxy:
        code, stderr = signal_while_held(stack, proxy, args, signum)
    assert code == 128 + signum
    record = json.loads(stderr.strip().splitlines()[-1])
    assert len(record["lease_ids"]) == 1
    assert record["revocation"]["ok"] is True
    assert database_users(pg) == users_before
    assert live_leases(admin) == leases_before


@contextmanager
def role_denying_dev(admin: hvac.Client) -> Iterator[str]:
    """Add an AWS role that agent `dev` may read by policy but its role denies."""
    name = "exec-test-ops"
    statement = {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
    admin.write(
        f"agent-creds/aws/roles/{name}",
        credential_type="iam_user",
        policy_document=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        allowed_agents="ops-*",
    )
    try:
        with extra_read_grant(admin, f"agent-creds/aws/creds/{name}"):
            yield name
    finally:
        admin.delete(f"agent-creds/aws/roles/{name}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_denied_read(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any], signum: int
) -> None:
    # The database role is minted first. The proxy delays the response of the
    # AWS read, which the plugin denies, until after the signal arrived.
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    with role_denying_dev(admin) as denied:
        args = ["--json", "--role", "database/demo-readonly", "--role", f"aws/{denied}"]
        with creds_delay_proxy(stack.vault_addr, f"/creds/{denied}") as proxy:
            code, stderr = signal_while_held(
                stack, proxy, [*args, "--", "true"], signum
            )
        aws_leases = live_leases(admin, f"agent-creds/aws/creds/{denied}/")

    assert code == 128 + signum
    assert "not in allowed_agents" in stderr
    assert f"interrupted by signal {signum}" in stderr
    record = json.loads(stderr.strip().splitlines()[-1])
    assert record["exit_code"] == 128 + signum
    assert record["policy"]["decision"] == "denied"
    assert len(record["lease_ids"]) == 1
    assert record["lease_ids"][0].startswith(CREDS_PREFIX)
    assert record["revocation"]["ok"] is True
    assert record["revocation"]["leases_revoked"] == record["lease_ids"]
    assert database_users(pg) == users_before
    assert live_leases(admin) == leases_before
    assert aws_leases == []


def test_signal_denied_read_failed_revoke(
    stack: Any, admin: hvac.Client, pg: psycopg.Connection[Any]
) -> None:
    # A signal arrives during a denied read, and the first lease's revocation
    # fails too. 125 wins, and because the command never ran, stderr names
    # the signal's code that 125 replaced.
    users_before = database_users(pg)
    leases_before = live_leases(admin)
    signum = signal.SIGTERM
    with (
        role_denying_dev(admin) as denied,
        extra_policy_rule(admin, f"sys/leases/revoke/{CREDS_PREFIX}*", "deny"),
    ):
        args = ["--json", "--role", "database/demo-readonly", "--role", f"aws/{denied}"]
        with creds_delay_proxy(stack.vault_addr, f"/creds/{denied}") as proxy:
            code, stderr = signal_while_held(
                stack, proxy, [*args, "--", "true"], signum
            )

    assert code == 125
    assert "not in allowed_agents" in stderr
    assert f"interrupted by signal {signum}" in stderr
    record = json.loads(stderr.strip().splitlines()[-1])
    lease_id = record["lease_ids"][0]
    assert f"revocation of lease {lease_id} failed" in stderr
    assert "may stay valid until the lease expires" in stderr
    assert "command's own exit status" not in stderr
    assert "the command did not run" in stderr
    assert f"would otherwise have been {128 + signum}" in stderr
    assert record["exit_code"] == 125
    assert record["child"] == {}
    assert record["policy"]["decision"] == "denied"
    assert list(record["revocation"]["leases_failed"]) == [lease_id]
    assert record["revocation"]["token_revoked"] is True
    # Revoking the token made Vault revoke the lease itself, so the lease's
    # credential did not stay valid until the lease expired.
    assert eventually(lambda: live_leases(admin) == leases_before)
    assert eventually(lambda: database_users(pg) == users_before)
