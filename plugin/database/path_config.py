"""Paths `database/config/<name>`, `database/config/` and `database/reset/<name>`."""

from __future__ import annotations

import logging

from plugin.database.backend import DatabaseBackend
from plugin.database.config import (
    DEFAULT_MAX_OPEN_CONNECTIONS,
    DEFAULT_SCRAM_ITERATIONS,
    PASSWORD_AUTHENTICATIONS,
    SUPPORTED_PLUGINS,
    DatabaseConfig,
    config_key,
    list_configs,
    load_config,
    require_config,
    save_config,
)
from plugin.database.credentials import (
    NameInputs,
    generate_config_password,
    render_username,
)
from plugin.database.errors import ConfigInUseError, InvalidConfigError
from plugin.database.leases import is_completion_of, load_live
from plugin.database.rollback import users_being_created
from plugin.database.sql import find_invalid_placeholder
from plugin.database.tls_fields import check_tls_fields
from plugin.framework import Field, FieldData, FieldType, Path, name_group
from plugin.logical import (
    LogicalError,
    Operation,
    PasswordPolicyError,
    Request,
    Response,
)

logger = logging.getLogger(__name__)

# PostgreSQL 15 runs a verifier's rounds at CREATE ROLE and acts on a cancel
# only after them (2e8 rounds took 145 s, measured with PostgreSQL 15.18), so
# a large count keeps a pooled connection busy for minutes per creds read.
# pgjdbc 42.7.11 and later reject more than 100000 rounds by default (its
# scramMaxIterations connection property).
MAX_SCRAM_ITERATIONS = 100_000
# rotate-root substitutes the admin user and its new password.
ROOT_ROTATION_PLACEHOLDERS = ("name", "username", "password")

S, INT, BOOL = FieldType.STRING, FieldType.INT, FieldType.BOOL
DURATION, LIST = FieldType.DURATION, FieldType.STRING_LIST

CONFIG_FIELDS = {
    "name": Field(S, "Name of this connection config; no default."),
    "plugin_name": Field(
        S, "Database plugin; only postgresql-database-plugin is supported; no default."
    ),
    "plugin_version": Field(S, "Accepted for compatibility and stored; default empty."),
    "verify_connection": Field(
        BOOL, "Connect once when the config is written; default true.", default=True
    ),
    "allowed_roles": Field(
        FieldType.COMMA_STRING_LIST,
        "Roles (globs, * for all) that may use this config; default none.",
    ),
    "root_rotation_statements": Field(
        LIST,
        "Statements that set the admin password, with {{name}} and {{password}}; "
        "default ALTER ROLE ... WITH PASSWORD.",
    ),
    "password_policy": Field(
        S,
        "Name of the Vault password policy that generates the passwords of new "
        "users and of rotate-root; default empty: 32 random letters, digits and "
        "-_. characters.",
    ),
    "connection_url": Field(
        S,
        "PostgreSQL URL or key=value string; use {{username}} and {{password}} "
        "in place of the credentials; no default.",
    ),
    "username": Field(S, "Admin user the plugin connects as; no default."),
    "password": Field(
        S, "Admin password, never returned on read; default empty.", sensitive=True
    ),
    "max_open_connections": Field(
        INT,
        "Max connections open at once; 0 means the default; default 4.",
        default=DEFAULT_MAX_OPEN_CONNECTIONS,
    ),
    "max_idle_connections": Field(
        INT, "Max idle connections kept; default 0, meaning max_open_connections."
    ),
    "max_connection_lifetime": Field(
        DURATION, "Max age of a pooled connection; default 0, meaning no limit."
    ),
    "password_authentication": Field(
        S,
        "password sends generated passwords as text, scram-sha-256 sends only "
        "their SCRAM verifier; default password.",
        default="password",
    ),
    "scram_iterations": Field(
        INT,
        "PBKDF2 rounds of the SCRAM verifiers of new users' passwords with "
        "password_authentication=scram-sha-256 (extension), from 1 to 100000; "
        "1 suffices for the plugin's own 32-character passwords, and skips "
        "PostgreSQL's hashing at CREATE ROLE; 0 means the default; default 4096.",
        default=DEFAULT_SCRAM_ITERATIONS,
    ),
    "username_template": Field(
        S, "Template of generated user names; default v-AGENT-ROLE-RANDOM."
    ),
    "disable_escaping": Field(
        BOOL,
        "Accepted for compatibility: credentials are never spliced into the "
        "URL here; default false.",
    ),
    "tls_ca": Field(S, "PEM CA certificate that verifies the server; default empty."),
    "tls_certificate": Field(
        S, "PEM client certificate for TLS authentication; default empty."
    ),
    "private_key": Field(
        S, "PEM key of tls_certificate, never returned; default empty.", sensitive=True
    ),
    "owner_role": Field(
        S,
        "Role that receives the objects of a revoked user; default the admin "
        "user of the connection.",
    ),
}


def config_paths(backend: DatabaseBackend) -> list[Path]:
    """Return the config, config-list and reset paths."""
    handlers = _ConfigHandlers(backend)
    write = handlers.write
    return [
        Path(
            pattern="database/config/?",
            operations={Operation.LIST: handlers.list},
            help_synopsis="List the connection configs.",
            help_description="Returns the names of the connection configs in keys.",
        ),
        Path(
            pattern="database/config/" + name_group("name"),
            fields=CONFIG_FIELDS,
            operations={
                Operation.READ: handlers.read,
                Operation.CREATE: write,
                Operation.UPDATE: write,
                Operation.DELETE: handlers.delete,
            },
            existence_check=handlers.exists,
            help_synopsis="Configure the connection to one PostgreSQL server.",
            help_description=CONFIG_HELP,
        ),
        Path(
            pattern="database/reset/" + name_group("name"),
            fields={"name": CONFIG_FIELDS["name"]},
            operations={Operation.UPDATE: handlers.reset},
            help_synopsis="Close a config's connections and reconnect.",
            help_description="Closes the pooled connections of the config; the "
            "next request opens new ones. With verify_connection set, it "
            "connects once to check the server.",
        ),
    ]


CONFIG_HELP = """\
Stores how the plugin reaches one PostgreSQL server, with the API of Vault's
database secrets engine. The password is sent to the server as a separate
connection parameter, never spliced into the URL, and never returned on read.
Writing an existing config keeps the stored values of fields the request
leaves out. A config cannot be deleted while credentials minted from it exist.
"""


class _ConfigHandlers:
    def __init__(self, backend: DatabaseBackend) -> None:
        self.backend = backend

    def exists(self, request: Request, data: FieldData) -> bool:
        return load_config(request.storage, data.get("name")) is not None

    def list(self, request: Request, data: FieldData) -> Response:
        return Response(data={"keys": list_configs(request.storage)})

    def read(self, request: Request, data: FieldData) -> Response | None:
        config = load_config(request.storage, data.get("name"))
        if config is None:
            return None
        return Response(
            data={
                "plugin_name": config.plugin_name,
                "plugin_version": config.plugin_version,
                "connection_details": config.connection_details(),
                "allowed_roles": config.allowed_roles,
                "root_credentials_rotate_statements": config.root_rotation_statements,
                "password_policy": config.password_policy,
                "verify_connection": config.verify_connection,
                # An extension, also here so that Terraform's
                # vault_generic_endpoint, which writes it, reads it back.
                "scram_iterations": config.scram_iterations,
            }
        )

    def write(self, request: Request, data: FieldData) -> Response | None:
        name = data.get("name")
        with self.backend.write_lock:
            stored = load_config(request.storage, name)
            updating = stored is not None and request.operation is Operation.UPDATE
            config = merge_config(stored if updating else None, data)
            validate_config(config)
            if config.verify_connection:
                self._check_password_policy(config)
                self._verify(name, config)
            save_config(request.storage, name, config)
        self.backend.close_pool(name)
        logger.info("config written: config=%s update=%s", name, updating)
        return None

    def delete(self, request: Request, data: FieldData) -> None:
        name = data.get("name")
        with self.backend.deleting(name):
            self._check_unused(request, name)
            with self.backend.write_lock:
                request.storage.delete(config_key(name))
        self.backend.close_pool(name)
        logger.info("config deleted: config=%s", name)

    def _check_unused(self, request: Request, name: str) -> None:
        """Raise ConfigInUseError while any user of config `name` may exist."""
        # Mints record their users after their responses. The WAL entries are
        # read before the live records: an entry is deleted only after its
        # record is written, so each user shows in one of the two.
        self.backend.wait_deferred_where(lambda key: is_completion_of(key, name))
        creating = users_being_created(request.storage, name)
        live = load_live(request.storage, name)
        if live:
            roles = sorted({str(r.get("role", "")) for r in live.values()})
            prefixes = ", ".join(
                f"{request.mount_point}database/creds/{role}" for role in roles
            )
            raise ConfigInUseError(
                f"config {name!r} still has {len(live)} live credentials; revoke "
                f"them first with `bao lease revoke -prefix` on {prefixes}, then "
                f"run {request.mount_point}database/tidy for users whose lease "
                "is gone"
            )
        if creating:
            raise ConfigInUseError(
                f"config {name!r} has {len(creating)} users being created or "
                "left by an interrupted mint; retry in a few seconds, or after "
                "the periodic rollback (10 minutes) has dropped them"
            )

    def reset(self, request: Request, data: FieldData) -> None:
        name = data.get("name")
        config = require_config(request.storage, name)
        self.backend.close_pool(name)
        if config.verify_connection:
            self._verify(name, config)
        logger.info("config reset: config=%s", name)

    def _check_password_policy(self, config: DatabaseConfig) -> None:
        """Generate one password from the config's policy, so a typo fails here.

        Vault's database engine checks the policy only when it first needs a
        password. The check runs with verify_connection only, so a config can
        still be written before its policy.
        """
        if not config.password_policy:
            return
        try:
            generate_config_password(config, self.backend.system)
        except PasswordPolicyError as err:
            raise InvalidConfigError(
                f"invalid password_policy: {err}; or write verify_connection=false "
                "to store the config before the policy exists"
            ) from err

    def _verify(self, name: str, config: DatabaseConfig) -> None:
        try:
            self.backend.verify(name, config)
        except LogicalError as err:
            fix = "fix the connection fields"
            if "certificate verify failed" in str(err):
                fix = (
                    "set tls_ca to the PEM certificate of the CA that signed the "
                    "server's certificate"
                )
            raise InvalidConfigError(
                f"error verifying the connection of config {name!r}: {err}; {fix} "
                "or write verify_connection=false"
            ) from err


def merge_config(stored: DatabaseConfig | None, data: FieldData) -> DatabaseConfig:
    """Return `stored` updated with the request's fields, or a new config."""
    config = stored or DatabaseConfig()
    for field_name in CONFIG_FIELDS:
        if field_name == "name":
            continue
        value, present = data.get_ok(field_name)
        if present:
            setattr(config, field_name, value)
    if config.max_open_connections == 0:
        # Vault's SQL connection producer reads 0, or a null, as its default.
        config.max_open_connections = DEFAULT_MAX_OPEN_CONNECTIONS
    if not config.password_authentication:
        # Vault's PostgreSQL plugin reads an empty value, or a null, as password.
        config.password_authentication = "password"  # noqa: S105 (a method name)
    if config.scram_iterations == 0:
        config.scram_iterations = DEFAULT_SCRAM_ITERATIONS
    return config


def validate_config(config: DatabaseConfig) -> None:
    """Raise InvalidConfigError for a config that cannot work."""
    if config.plugin_name not in SUPPORTED_PLUGINS:
        raise InvalidConfigError(
            f"unsupported plugin_name {config.plugin_name!r}: supported plugins "
            f"are {', '.join(SUPPORTED_PLUGINS)}"
        )
    if config.password_authentication not in PASSWORD_AUTHENTICATIONS:
        raise InvalidConfigError(
            f"invalid password_authentication {config.password_authentication!r}: "
            f"expected one of {', '.join(PASSWORD_AUTHENTICATIONS)}"
        )
    _check_scram_iterations(config)
    _check_pool_limits(config)
    if not config.connection_url:
        raise InvalidConfigError("missing connection_url: give a PostgreSQL URL")
    config.conninfo()
    try:
        render_username(config.username_template, NameInputs("agent", "role"))
    except ValueError as err:
        raise InvalidConfigError(
            f"invalid username_template {config.username_template!r}: {err}"
        ) from err
    placeholder = find_invalid_placeholder(
        config.root_rotation_statements, ROOT_ROTATION_PLACEHOLDERS
    )
    if placeholder:
        raise InvalidConfigError(
            f"invalid placeholder {placeholder} in root_rotation_statements: "
            "they can use {{name}}, {{username}} and {{password}}"
        )
    check_tls_fields(config)


def _check_scram_iterations(config: DatabaseConfig) -> None:
    """Raise InvalidConfigError for a scram_iterations the plugin would not use.

    Fewer rounds are safe only for passwords too random to guess: the
    plugin's own are 32 characters of 65 (192 bits), so each extra round
    would only slow the CREATE ROLE and every login. A password policy's
    strength is unknown here, so it keeps at least the default.
    """
    iterations = config.scram_iterations
    if not 1 <= iterations <= MAX_SCRAM_ITERATIONS:
        value_text = str(iterations)
        if len(value_text) > 16:
            # A JSON number such as 1e300 arrives as an integer of 301 digits.
            digits = len(value_text.lstrip("-"))
            value_text = f"{value_text[:8]}... ({digits} digits)"
        raise InvalidConfigError(
            f"invalid scram_iterations {value_text}: expected 1 to "
            f"{MAX_SCRAM_ITERATIONS}, or 0 for {DEFAULT_SCRAM_ITERATIONS}; more "
            "rounds slow each creds read, and pgjdbc 42.7.11 and later reject "
            "them by default"
        )
    if iterations == DEFAULT_SCRAM_ITERATIONS:
        return
    if not config.sends_verifier():
        raise InvalidConfigError(
            f"scram_iterations {iterations} needs password_authentication="
            "scram-sha-256: with password, PostgreSQL hashes the password "
            f"itself; set password_authentication=scram-sha-256 or "
            f"scram_iterations={DEFAULT_SCRAM_ITERATIONS}"
        )
    if config.password_policy and iterations < DEFAULT_SCRAM_ITERATIONS:
        raise InvalidConfigError(
            f"scram_iterations {iterations} is below {DEFAULT_SCRAM_ITERATIONS} "
            f"with password_policy {config.password_policy!r}, whose passwords "
            "may be guessable; remove the policy to use the plugin's 192-bit "
            f"passwords, or set scram_iterations={DEFAULT_SCRAM_ITERATIONS} "
            "or more"
        )


def _check_pool_limits(config: DatabaseConfig) -> None:
    """Raise InvalidConfigError for a negative connection limit.

    Vault's SQL plugins hand negative limits to Go's database/sql, which
    reads them as no limit (max_open_connections) or as no idle
    connections (max_idle_connections). A max_idle_connections above
    max_open_connections is accepted and acts as max_open_connections, as
    in Vault.
    """
    if config.max_open_connections < 1:
        raise InvalidConfigError(
            f"invalid max_open_connections {config.max_open_connections}: expected "
            f"1 or more, or 0 for the default of {DEFAULT_MAX_OPEN_CONNECTIONS}"
        )
    if config.max_idle_connections < 0:
        raise InvalidConfigError(
            f"invalid max_idle_connections {config.max_idle_connections}: expected "
            "0 or more, where 0 means max_open_connections"
        )
