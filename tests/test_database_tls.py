"""TLS to PostgreSQL: `tls_ca`, `tls_certificate`, `private_key` and `sslmode`.

The module starts a PostgreSQL cluster of its own with `ssl = on`, a server
certificate for 127.0.0.1 and a pg_hba.conf that accepts TCP connections only
over TLS: the user `bridge_cert` by client certificate (`cert`), every other
user by password (`scram-sha-256`). A certificate authority made here signs
the server and client certificates. The plugin, mounted at a path of its own
in the session's OpenBao, connects to the cluster with the TLS fields of
`database/config`, mints users and revokes them, all over TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack import postgres as stack_postgres
from devstack.stack import StackState
from tests.support.database_stack import (
    DATABASE_PLUGIN,
    admin_client,
    agent_client,
    jwt_accessor,
    plugin_mount,
)
from tests.support.postgres import Cluster, start_cluster
from tests.test_database_creds import READONLY

pytestmark = pytest.mark.stack

MOUNT = "agent-creds-db-tls"
CERT_USER = "bridge_cert"
AGENT_POLICY = f'path "{MOUNT}/database/creds/*" {{ capabilities = ["read"] }}'
# First match wins: TCP without TLS matches no line and is rejected.
PG_HBA = f"""\
local all all scram-sha-256
hostssl all {CERT_USER} 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
"""
SSL_SETTINGS = """
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'root.crt'
"""


@dataclass(frozen=True)
class Pki:
    """PEM texts: a CA, a server and a client certificate, and an unrelated CA."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _build(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(subject: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _build(subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[str, str]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _build(subject, key, (ca_cert.subject, ca_key)).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def new_pki() -> Pki:
    ca = _ca("agent-bridge test CA")
    server_cert, server_key = _leaf(
        ca,
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    # The cert method maps the certificate's CN to the database user.
    client_cert, client_key = _leaf(ca, CERT_USER, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(
        ca=_cert_pem(ca[0]),
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        other_ca=_cert_pem(_ca("unrelated CA")[0]),
    )


def _enable_tls(data_dir: Path, pki: Pki) -> None:
    """Install the server's certificate and key, turn on ssl, require TLS."""
    files = {
        "server.crt": pki.server_cert,
        "server.key": pki.server_key,
        "root.crt": pki.ca,
    }
    # The cluster runs as its service user when the tests run as root.
    owner = stack_postgres.SERVICE_USER if os.geteuid() == 0 else None
    for name, text in files.items():
        path = data_dir / name
        path.touch(mode=0o600)
        path.write_text(text)
        if owner is not None:
            shutil.chown(path, owner, owner)
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write(SSL_SETTINGS)
    (data_dir / "pg_hba.conf").write_text(PG_HBA)


@dataclass(frozen=True)
class TlsServer:
    """The TLS cluster, its PKI, and the CA certificate as a file for libpq."""

    cluster: Cluster
    pki: Pki
    ca_file: Path

    def superuser(self) -> psycopg.Connection[Any]:
        """Connect as the superuser, checking the server's certificate."""
        return psycopg.connect(
            **self.cluster.conninfo(),
            sslmode="verify-full",
            sslrootcert=str(self.ca_file),
            autocommit=True,
        )

    def url(self, query: str = "", host: str = "127.0.0.1") -> str:
        """Return a connection_url for the `postgres` database."""
        credentials = "{{username}}:{{password}}"
        return f"postgresql://{credentials}@{host}:{self.cluster.port}/postgres{query}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A cluster that accepts only TLS over TCP, with the user CERT_USER."""
    pki = new_pki()
    ca_file = tmp_path_factory.mktemp("tls-client") / "ca.crt"
    ca_file.write_text(pki.ca)
    cluster = start_cluster(tmp_path_factory.mktemp("pg-tls"))
    try:
        with psycopg.connect(**cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {CERT_USER} SUPERUSER LOGIN")
        cluster.stop()
        _enable_tls(cluster.server.data_dir, pki)
        cluster.start()
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            psycopg.connect(**cluster.conninfo(), sslmode="disable")
        yield TlsServer(cluster, pki, ca_file)
    finally:
        cluster.remove()


@pytest.fixture(scope="module")
def admin(stack: StackState) -> hvac.Client:
    return admin_client(stack)


@pytest.fixture(scope="module")
def mount(admin: hvac.Client, server: TlsServer) -> Iterator[str]:
    with plugin_mount(admin, MOUNT, jwt_accessor=jwt_accessor(admin)):
        yield MOUNT


@pytest.fixture(scope="module")
def agent(stack: StackState, admin: hvac.Client, mount: str) -> hvac.Client:
    return agent_client(stack, admin, "db-tls", AGENT_POLICY)


def configure(admin: hvac.Client, name: str, **fields: Any) -> None:
    admin.write(
        f"{MOUNT}/database/config/{name}",
        plugin_name=DATABASE_PLUGIN,
        allowed_roles="*",
        **fields,
    )


def add_role(admin: hvac.Client, name: str, db_name: str) -> None:
    admin.write(
        f"{MOUNT}/database/roles/{name}",
        db_name=db_name,
        creation_statements=READONLY,
        allowed_agents="dev",
    )


def mint_and_connect(
    admin: hvac.Client, agent: hvac.Client, server: TlsServer, role: str
) -> None:
    """Mint a user of `role`, log in with it over verified TLS, revoke it."""
    issued = agent.read(f"{MOUNT}/database/creds/{role}")
    data = issued["data"]
    with psycopg.connect(
        host=data["host"],
        port=data["port"],
        dbname=data["database"],
        user=data["username"],
        password=data["password"],
        sslmode="verify-full",
        sslrootcert=str(server.ca_file),
    ) as conn:
        row = conn.execute(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row == (data["username"], True)

    admin.sys.revoke_lease(issued["lease_id"])
    with server.superuser() as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (data["username"],)
        ).fetchone()
    assert found is None


def server_log(stack: StackState) -> str:
    return (Path(stack.state_dir) / "openbao" / "server.log").read_text()


def key_body(pem: str) -> str:
    """Return a line of the key's base64 body, which no output may contain."""
    return pem.splitlines()[1]


def test_verify_full_with_tls_ca(
    admin: hvac.Client, agent: hvac.Client, server: TlsServer
) -> None:
    configure(
        admin,
        "tls-ca",
        connection_url=server.url("?sslmode=verify-full"),
        username="postgres",
        password=server.cluster.password,
        tls_ca=server.pki.ca,
    )
    add_role(admin, "tls-ca-reader", "tls-ca")

    mint_and_connect(admin, agent, server, "tls-ca-reader")

    details = admin.read(f"{MOUNT}/database/config/tls-ca")["data"]
    assert details["connection_details"]["tls_ca"] == server.pki.ca


def test_tls_ca_defaults_to_verify_full(
    admin: hvac.Client, mount: str, server: TlsServer
) -> None:
    # Without sslmode, tls_ca means verify-full: the server's certificate
    # names 127.0.0.1 only, so connecting to localhost fails the host check.
    with pytest.raises(hvac.exceptions.InvalidRequest) as raised:
        configure(
            admin,
            "tls-host",
            connection_url=server.url(host="localhost"),
            username="postgres",
            password=server.cluster.password,
            tls_ca=server.pki.ca,
        )

    message = str(raised.value)
    assert "error verifying the connection of config 'tls-host'" in message
    assert "does not match host name" in message
    assert admin.read(f"{MOUNT}/database/config/tls-host") is None


def test_client_certificate_authenticates(
    admin: hvac.Client, agent: hvac.Client, stack: StackState, server: TlsServer
) -> None:
    pki = server.pki
    configure(
        admin,
        "tls-cert",
        connection_url=server.url("?sslmode=verify-full"),
        username=CERT_USER,
        tls_ca=pki.ca,
        tls_certificate=pki.client_cert,
        private_key=pki.client_key,
    )
    add_role(admin, "tls-cert-reader", "tls-cert")

    mint_and_connect(admin, agent, server, "tls-cert-reader")

    read = admin.read(f"{MOUNT}/database/config/tls-cert")["data"]
    assert read["connection_details"]["tls_certificate"] == pki.client_cert
    assert "private_key" not in read["connection_details"]
    assert key_body(pki.client_key) not in str(read)
    assert key_body(pki.client_key) not in server_log(stack)


def test_wrong_ca_fails_config_write(
    admin: hvac.Client, stack: StackState, mount: str, server: TlsServer
) -> None:
    pki = server.pki
    with pytest.raises(hvac.exceptions.InvalidRequest) as raised:
        configure(
            admin,
            "tls-wrong-ca",
            connection_url=server.url("?sslmode=verify-full"),
            username=CERT_USER,
            tls_ca=pki.other_ca,
            tls_certificate=pki.client_cert,
            private_key=pki.client_key,
        )

    message = str(raised.value)
    assert "error verifying the connection of config 'tls-wrong-ca'" in message
    assert "certificate verify failed" in message
    assert "set tls_ca to the PEM certificate of the CA" in message
    assert "verify_connection=false" in message
    assert key_body(pki.client_key) not in message
    assert key_body(pki.client_key) not in server_log(stack)
    assert admin.read(f"{MOUNT}/database/config/tls-wrong-ca") is None
