"""One agent-exec call, from finding the command to revoking what it minted.

The steps run in this order. Find the command first, so a typo mints
nothing. Get a JWT from the attestor, log in to Vault with it and fork the
watchdog. Check every role, then read each role's credentials. Run the
command with them in its environment while a thread renews the token and
leases. Then revoke every lease and the token, which also happens after any
failure that follows the login.

Each request is sent as soon as its input is known, and work that does not
depend on its response runs while the server handles it. While the attestor
inspects the process, agent-exec connects to Vault and looks up `prctl`.
It forks the watchdog during the role check, and it kills the processes
that left the command's process group during the first revocation. The
modules that only later steps need are imported during these waits instead
of at start-up.
"""

from __future__ import annotations

import os
import sys

from attestor import protocol_constants as wire
from attestor.agent_exec import signals
from attestor.agent_exec.audit import AuditRecord, Stopwatch
from attestor.agent_exec.command import resolve_command
from attestor.agent_exec.errors import (
    DeniedError,
    ExecError,
    ExitCode,
    InterruptedBySignalError,
    UnavailableError,
    printable,
    suppress,
)
from attestor.agent_exec.logs import configure as configure_logging
from attestor.agent_exec.logs import get_logger
from attestor.agent_exec.options import Options, parse_options
from attestor.agent_exec.roles import Role, creds_params, parse_role, resolve_roles
from attestor.client import (
    AttestorError,
    IssuedToken,
    TokenRequest,
    send_token_request,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import NoReturn, TypeVar

    from attestor.agent_exec.child import ChildResult, ChildRunner
    from attestor.agent_exec.prctl import Prctl
    from attestor.agent_exec.renew import Renewer
    from attestor.agent_exec.revoke import RevocationReport
    from attestor.agent_exec.vault import Lease, Login, VaultClient
    from attestor.agent_exec.watchdog import Watchdog

    T = TypeVar("T")

log = get_logger(__name__)

# Attestor failures that are a decision about the caller, not an outage.
ATTESTOR_DENIALS = frozenset(
    {wire.NO_MATCHING_AGENT, wire.PROCESS_CHANGED, wire.BAD_REQUEST}
)


class Call:
    """One agent-exec invocation and everything it minted."""

    def __init__(
        self,
        options: Options,
        inherited_ignored: frozenset[int],
        closed_fds: frozenset[int] = frozenset(),
    ) -> None:
        self.options = options
        self.inherited_ignored = inherited_ignored
        self.closed_fds = closed_fds
        self.record = AuditRecord()
        self.stopwatch = Stopwatch(self.record.timings_ms)
        self.vault: VaultClient | None = None
        self.login: Login | None = None
        self.watchdog: Watchdog | None = None
        self.renewer: Renewer | None = None
        self.leases: list[tuple[Role, Lease]] = []
        self.error: ExecError | None = None
        self.runner: ChildRunner | None = None
        self.child: ChildResult | None = None
        self.report: RevocationReport | None = None
        # While a Vault request is in flight, a terminating signal is only
        # recorded here, because closing the connection makes Vault cancel
        # the request, and the plugin may still create a user that no lease
        # then tracks.
        self._defer_signals = False
        self._pending_signal = 0

    def execute(self) -> int:
        """Run the whole call and return agent-exec's exit code."""
        _set_signal_handlers(self._on_signal, skip=self.inherited_ignored)
        try:
            self._prepare()
            self._raise_pending_signal()
            self._run_command()
        except ExecError as err:
            self.error = err
        except Exception as err:  # a bug: still revoke, then report it
            log.debug("unexpected error", exc_info=True)
            self.error = ExecError(f"internal error: {type(err).__name__}: {err}")
        finally:
            # Revocation must run to the end; a second Ctrl-C must not stop it.
            _set_signal_handlers(signals.ignore)
            self._finish()
        return self._exit_code()

    def _prepare(self) -> None:
        options = self.options
        program = resolve_command(options.command[0], os.environ.get("PATH"))
        self.record.program = program
        specs = [parse_role(value) for value in options.roles]

        token_request = self._send_token_request()
        # While the attestor inspects this process:
        from attestor.agent_exec.prctl import Prctl
        from attestor.agent_exec.vault import VaultClient

        vault = VaultClient(options.vault_addr, namespace=options.namespace)
        self.vault = vault
        vault.preconnect()
        prctl = Prctl()
        issued = self._attest(token_request)
        _harden_process(prctl)
        self.login = self._login(vault, issued)

        roles = self._check(
            lambda: resolve_roles(
                vault,
                options.mount,
                specs,
                meanwhile=self._start_watchdog,
            )
        )
        self.record.roles = [str(role) for role in roles]
        self._raise_pending_signal()
        params = [creds_params(role, options.ttl) for role in roles]
        if self.watchdog is not None:
            self.watchdog.wait_detached()
        self.stopwatch.lap("resolve_roles")
        for role, role_params in zip(roles, params, strict=True):
            self._mint(vault, role, role_params)
        self.stopwatch.lap("mint")
        self.record.decision = "allowed"

    def _send_token_request(self) -> TokenRequest:
        options = self.options
        try:
            return send_token_request(
                options.attestor_socket,
                tool=options.tool,
                on_behalf_of=options.on_behalf_of,
            )
        except AttestorError as err:
            raise self._attestor_failure(err) from err

    def _attest(self, token_request: TokenRequest) -> IssuedToken:
        try:
            issued = token_request.result()
        except AttestorError as err:
            raise self._attestor_failure(err) from err
        self.record.call_id = issued.jti
        self.record.agent = issued.agent
        self.stopwatch.lap("attest")
        return issued

    def _attestor_failure(self, err: AttestorError) -> ExecError:
        if err.code in ATTESTOR_DENIALS:
            self.record.decision = "denied"
            self.record.reason = f"attestor: {err.code}"
            return DeniedError(f"the attestor rejected this process: {err}")
        return UnavailableError(f"attestor request failed: {err}")

    def _login(self, vault: VaultClient, issued: IssuedToken) -> Login:
        mount = self.options.auth_mount
        login = self._check(
            lambda: vault.login_jwt(
                mount,
                issued.agent,
                issued.token,
                meanwhile=lambda: self._while_logging_in(issued.token),
            )
        )
        self.record.token_accessor = login.accessor
        self.record.policies = list(login.policies)
        self.stopwatch.lap("login")
        self.login = login
        self._raise_pending_signal()
        return login

    def _while_logging_in(self, jwt: str) -> None:
        if self.options.json:  # only the printed record shows the claims
            self.record.set_claims(jwt)
        _preload("attestor.agent_exec.watchdog")

    def _start_watchdog(self) -> None:
        """Fork the watchdog, which keeps a copy of the logged-in client."""
        from attestor.agent_exec.watchdog import Watchdog

        assert self.vault is not None
        self.watchdog = Watchdog.start(self.vault)

    def _mint(
        self, vault: VaultClient, role: Role, params: dict[str, str] | None
    ) -> None:
        from attestor.agent_exec.vault import VaultRequestError

        assert self.watchdog is not None
        try:
            lease = self._check(
                lambda: vault.read_creds(
                    role.path, params, meanwhile=self._fork_command_early
                )
            )
        except VaultRequestError as err:
            raise DeniedError(
                f"cannot read the credentials of role {role}: {err}; check that the "
                f"role exists and lists agent {self.record.agent!r} in allowed_agents"
            ) from err
        self.leases.append((role, lease))
        self.record.lease_ids.append(lease.lease_id)
        self.watchdog.add_lease(lease.lease_id)
        log.info("minted role=%s lease_id=%s ttl=%d", role, lease.lease_id, lease.ttl)
        if self.options.ttl and lease.ttl > self.options.ttl:
            log.warning(
                "the lease of %s lasts %d s, not the %d s requested with --ttl: "
                "the plugin ignored the request",
                role,
                lease.ttl,
                self.options.ttl,
            )
        self._raise_pending_signal()

    def _check(self, step: Callable[[], T]) -> T:
        """Run a Vault step; record a denial as the call's policy decision.

        A terminating signal during the step waits until the step ends, which
        the request's socket timeout bounds. Signals stay deferred until the
        caller has recorded what the step minted and calls
        `_raise_pending_signal`.
        """
        self._defer_signals = True
        try:
            return step()
        except DeniedError as err:
            self.record.decision = "denied"
            self.record.reason = str(err)
            raise

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._defer_signals:
            log.info("signal %d received; it ends the call after this request", signum)
            self._pending_signal = self._pending_signal or signum
            return
        raise InterruptedBySignalError(signum)

    def _raise_pending_signal(self) -> None:
        self._defer_signals = False
        if self._pending_signal:
            raise InterruptedBySignalError(self._pending_signal)

    def _fork_command_early(self) -> None:
        """Fork the command's process while the first credentials are minted.

        A failure is left for `_run_command` to retry and report, so that
        the response, and with it the lease, is still read.
        """
        try:
            self._fork_command()
        except OSError as err:
            log.debug("forking the command's process failed: %s", err)

    def _fork_command(self) -> None:
        """Fork the command's process, which waits for its environment.

        The watchdog learns the new process group at once.
        """
        from attestor.agent_exec.child import ChildRunner, ChildSpec

        if self.runner is not None:
            return
        assert self.watchdog is not None
        _preload("attestor.agent_exec.env", "attestor.agent_exec.renew")
        spec = ChildSpec(
            program=self.record.program,
            argv=self.options.command,
            kill_timeout=self.options.kill_timeout,
            inherited_ignored=self.inherited_ignored,
            closed_fds=self.closed_fds,
            keep_pids=frozenset([self.watchdog.pid]),
        )
        runner = ChildRunner(spec)
        runner.start(on_forked=self.watchdog.watch_group)
        self.runner = runner

    def _run_command(self) -> None:
        from attestor.agent_exec.env import child_environ

        self._fork_command()  # unless it ran during the mint
        assert self.runner is not None
        credentials = [(role.kind, lease.data) for role, lease in self.leases]
        env = child_environ(os.environ, credentials)
        self._start_renewer()
        self.child = self.runner.run(env)
        self.stopwatch.lap("command")
        if self.child.exec_error:
            _say(str(self.child.exec_error))

    def _start_renewer(self) -> None:
        from attestor.agent_exec.renew import Renewable, Renewer

        assert self.vault is not None and self.login is not None
        items = [
            Renewable(lease_id=lease.lease_id, ttl=lease.ttl)
            for _, lease in self.leases
            if lease.renewable and lease.ttl > 0
        ]
        if self.login.renewable and self.login.ttl > 0:
            items.append(Renewable(lease_id="", ttl=self.login.ttl))
        if items:
            self.renewer = Renewer(self.vault.copy(), items)
            self.renewer.start()

    def _finish(self) -> None:
        from attestor.agent_exec.revoke import revoke_call

        if self.runner is not None and not self.runner.launched:
            self.runner.abort()
        if self.renewer is not None:
            self.renewer.stop()
        if self.vault is not None and self.login is not None:
            lease_ids = [lease.lease_id for _, lease in self.leases if lease.lease_id]
            self.report = revoke_call(
                self.vault, lease_ids, meanwhile=self._end_orphans
            )
            self.record.revocation = self.report.as_dict()
            self.stopwatch.lap("revoke")
        self._end_orphans()
        if self.vault is not None:
            self.vault.close()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.stopwatch.total()

    def _end_orphans(self) -> None:
        """Kill the processes that left the command's process group, once.

        This runs while Vault revokes the first lease, because looking for
        them reads a /proc file per process on the host.
        """
        if self.runner is None or not self.runner.launched or self.runner.orphans_ended:
            return
        try:
            self.runner.end_orphans()
        except Exception as err:  # revocation must go on whatever failed here
            log.warning("killing the processes the command left failed: %r", err)

    def _exit_code(self) -> int:
        """Pick the exit code as docs/agent-exec.md's "Exit status" orders them.

        A failed revocation wins, then a signal that arrived before the
        command started, then agent-exec's error, then the command's code.
        """
        code = self._outcome_code()
        if self.report is not None and not self.report.ok:
            _print_revocation_failure(
                self.report, code, self.child is not None, self.login
            )
            code = ExitCode.REVOKE_FAILED
        self.record.exit_code = int(code)
        if self.child is not None:
            self.record.child = {
                "pid": self.child.pid,
                "exit_code": self.child.exit_code,
                "signals_forwarded": self.child.forwarded,
                "killed_after_timeout": self.child.killed_after_timeout,
                "leftovers_killed": self.child.leftovers_killed,
            }
        return int(code)

    def _outcome_code(self) -> int:
        if self.error is not None:
            _say(str(self.error))
        if isinstance(self.error, InterruptedBySignalError):
            return 128 + self.error.signum
        if self._pending_signal:
            # The signal arrived during a Vault request that then failed, such
            # as a denied creds read. It still decides the code, as it does
            # after a request that succeeded.
            interrupted = InterruptedBySignalError(self._pending_signal)
            _say(str(interrupted))
            return 128 + interrupted.signum
        if self.error is not None:
            return int(self.error.exit_code)
        assert self.child is not None
        return self.child.exit_code


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `agent-exec` console script."""
    closed_fds = _open_standard_fds()
    inherited_ignored = frozenset(
        signum
        for signum in signals.FORWARDED
        if signals.getsignal(signum) == signals.SIG_IGN
    )
    try:
        options = parse_options(argv)
    except ExecError as err:
        _say(str(err))
        _exit_now(err.exit_code)
    configure_logging(options.verbose)

    call = Call(options, inherited_ignored, closed_fds)
    code = call.execute()
    if options.json:
        _write_stderr(call.record.to_json())
    _exit_now(code)


def _say(message: str) -> None:
    """Print `message` on stderr as agent-exec's, with control characters escaped."""
    _write_stderr(f"agent-exec: {printable(message)}")


def _write_stderr(line: str) -> None:
    """Write `line` to stderr; a closed or broken stderr loses it, not the call.

    The exit status still has to report the command's, as it does without
    the message.
    """
    with suppress(OSError, ValueError, AttributeError):
        print(line, file=sys.stderr, flush=True)


def _exit_now(code: int) -> NoReturn:
    """End the process with `code`, skipping the interpreter's finalisation.

    By now the command has exited, the leases and the token are revoked, the
    renewal thread has stopped and the watchdog has been reaped (or nothing
    was started), so the finalisation would only free memory: about 6 ms of
    every call.
    """
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken stream has nothing left to flush.
        with suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)


def _open_standard_fds() -> frozenset[int]:
    """Open /dev/null onto each of fds 0, 1 and 2 that is closed; return those fds.

    Otherwise the next descriptor agent-exec opens, such as the watchdog's
    pipe, would get one of these numbers, and code that sets up the standard
    streams of a child (the watchdog's `_detach`) would overwrite it. The
    command gets them closed again, as agent-exec received them. Python sets
    `sys.stdin`, `sys.stdout` or `sys.stderr` to None for a closed fd, so
    those streams are reopened on /dev/null too.
    """
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        # open() returns the lowest free descriptor, which is `fd` here.
        opened = os.open(os.devnull, os.O_RDWR)
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as agent-exec
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    return frozenset(closed)


def _print_revocation_failure(
    report: RevocationReport,
    outcome_code: int,
    command_ran: bool,
    login: Login | None,
) -> None:
    """Print each failed revocation, then the code that 125 replaces.

    `outcome_code` is the command's exit status if `command_ran`, else the
    code of what ended the call before the command (a signal or an error).
    """
    for lease_id, error in report.failed.items():
        _say(
            f"revocation of lease {lease_id} failed: {error}; the credential may "
            "stay valid until the lease expires, unless an operator revokes the "
            "lease first with 'vault lease revoke'"
        )
    if not report.token_revoked:
        # Each renewal asked for the login's TTL, so no more than that is left.
        # The accessor names the token without being it.
        lifetime = (
            f"it stays valid until its TTL ends, at most {login.ttl} s from now; an "
            "operator can revoke it first with "
            f"'vault token revoke -accessor {login.accessor}'"
            if login is not None
            else "it stays valid until its TTL ends"
        )
        _say(f"revocation of the call's token failed: {report.token_error}; {lifetime}")
    if command_ran:
        replaced = f"the command's own exit status was {outcome_code}"
    else:
        replaced = (
            "the command did not run, and the exit status would otherwise have "
            f"been {outcome_code}"
        )
    _say(f"exiting with {ExitCode.REVOKE_FAILED} for the failed revocation; {replaced}")


def _set_signal_handlers(
    handler: Callable[[int, FrameType | None], None],
    skip: frozenset[int] = frozenset(),
) -> None:
    """Set `handler` for each signal that would otherwise end agent-exec.

    A signal in `skip`, one ignored when agent-exec started, stays ignored.
    The signals that `ChildRunner.run` routed to its own handler get `handler` too.
    """
    signals.route(handler, signals.ENDS_PROCESS, skip)


def _preload(*modules: str) -> None:
    """Import `modules` now, while a server works, so later steps find them loaded."""
    for name in modules:
        __import__(name)


def _harden_process(prctl: Prctl) -> None:
    """Become non-dumpable and the reaper of every orphaned descendant.

    Non-dumpable keeps same-uid processes, the command included, out of our
    memory and /proc. It is set only after the attestor returned the JWT,
    because the attestor reads this process's /proc entries to identify it.
    As child subreaper, a descendant that double-forks or calls setsid stays
    our descendant, so the attestor still sees agent-exec among its
    ancestors and refuses it a JWT, and `ChildRunner` can kill it at the end.
    """
    from attestor.agent_exec.prctl import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE

    try:
        prctl.call(PR_SET_DUMPABLE, 0)
    except OSError as err:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: %s", err.strerror)
    try:
        prctl.call(PR_SET_CHILD_SUBREAPER, 1)
    except OSError as err:
        log.warning("prctl(PR_SET_CHILD_SUBREAPER, 1) failed: %s", err.strerror)
