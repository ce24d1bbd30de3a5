"""Vault's view of the mount, reached through the `pb.SystemView` broker service.

Implements `plugin.logical.SystemView`, plus the other SystemView calls a
backend may need (tainted, local mount, groups, password policies, cluster
info). Vault sends TTLs in nanoseconds; this client returns whole seconds.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from plugin.bridge.pb import backend_pb2, logical_pb2
from plugin.bridge.rpc import Channel, UnaryCall, status_code
from plugin.logical import (
    Entity,
    EntityAlias,
    ErrorKind,
    LogicalError,
    PasswordPolicyError,
)

logger = logging.getLogger(__name__)

_SERVICE = "/pb.SystemView/"
CALL_TIMEOUT = 30.0
_NANOSECONDS = 1_000_000_000
_Reply = TypeVar("_Reply", bound=Message)


class SystemViewError(LogicalError):
    """Vault's system view refused or failed a call.

    `code` is the call's gRPC status, or None when the reply carried the error.
    """

    kind = ErrorKind.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class GrpcSystemView:
    """`logical.SystemView` over one broker channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def _call(self, method: str, request: Message, reply_type: type[_Reply]) -> _Reply:
        # Backends call the system view rarely, so a stub per call is cheap
        # enough and keeps one code path for all methods.
        call = UnaryCall[Message, _Reply](self._channel, _SERVICE + method, reply_type)
        try:
            return call(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            code = status_code(err)
            logger.warning(
                "system view call to Vault failed",
                extra={"method": method, "code": str(code)},
            )
            raise SystemViewError(
                f"Vault's system view call {method} failed ({code}); retry, and "
                "check the Vault server log",
                code,
            ) from err

    def default_lease_ttl(self) -> int:
        reply = self._call("DefaultLeaseTTL", backend_pb2.Empty(), backend_pb2.TTLReply)
        return reply.TTL // _NANOSECONDS

    def max_lease_ttl(self) -> int:
        reply = self._call("MaxLeaseTTL", backend_pb2.Empty(), backend_pb2.TTLReply)
        return reply.TTL // _NANOSECONDS

    def tainted(self) -> bool:
        """Return whether the mount is being unmounted."""
        return self._call(
            "Tainted", backend_pb2.Empty(), backend_pb2.TaintedReply
        ).tainted

    def local_mount(self) -> bool:
        """Return whether the mount is local to this cluster (not replicated)."""
        reply = self._call(
            "LocalMount", backend_pb2.Empty(), backend_pb2.LocalMountReply
        )
        return reply.local

    def entity_info(self, entity_id: str) -> Entity | None:
        request = backend_pb2.EntityInfoArgs(entity_id=entity_id)
        reply = self._call("EntityInfo", request, backend_pb2.EntityInfoReply)
        _check("EntityInfo", reply.err)
        if not reply.HasField("entity"):
            return None
        return entity_from_proto(reply.entity)

    def groups_for_entity(self, entity_id: str) -> list[str]:
        """Return the names of the identity groups `entity_id` belongs to."""
        request = backend_pb2.EntityInfoArgs(entity_id=entity_id)
        reply = self._call("GroupsForEntity", request, backend_pb2.GroupsForEntityReply)
        _check("GroupsForEntity", reply.err)
        return [group.name for group in reply.groups]

    def generate_password_from_policy(self, policy_name: str) -> str:
        """Return a password made by Vault from the named password policy.

        OpenBao 2.x returns the status INTERNAL, with the message "failed to
        generate password", both for a policy that does not exist and for one
        whose rules cannot be met (sdk/plugin/grpc_system.go), so both raise
        PasswordPolicyError. Other statuses are transport failures.
        """
        request = backend_pb2.GeneratePasswordFromPolicyRequest(policy_name=policy_name)
        try:
            reply = self._call(
                "GeneratePasswordFromPolicy",
                request,
                backend_pb2.GeneratePasswordFromPolicyReply,
            )
        except SystemViewError as err:
            if err.code is not grpc.StatusCode.INTERNAL:
                raise
            raise PasswordPolicyError(
                f"unable to generate a password from password policy "
                f"{policy_name!r}: it does not exist or its rules cannot be met; "
                f"create it with `bao write sys/policies/password/{policy_name} "
                f"policy=@policy.hcl`, and test it with `bao read "
                f"sys/policies/password/{policy_name}/generate`"
            ) from err
        return reply.password

    def plugin_env_vault_version(self) -> str:
        reply = self._call("PluginEnv", backend_pb2.Empty(), backend_pb2.PluginEnvReply)
        _check("PluginEnv", reply.err)
        return reply.plugin_environment.vault_version

    def cluster_info(self) -> tuple[str, str]:
        """Return the cluster's name and id."""
        reply = self._call(
            "ClusterInfo", backend_pb2.Empty(), backend_pb2.ClusterInfoReply
        )
        _check("ClusterInfo", reply.err)
        return reply.cluster_name, reply.cluster_id


def entity_from_proto(entity: logical_pb2.Entity) -> Entity:
    """Convert a `logical.Entity` message to the backend contract's Entity."""
    aliases = tuple(
        EntityAlias(
            name=alias.name,
            mount_accessor=alias.mount_accessor,
            mount_type=alias.mount_type,
            metadata=dict(alias.metadata),
        )
        for alias in entity.aliases
    )
    return Entity(
        id=entity.ID,
        name=entity.name,
        aliases=aliases,
        metadata=dict(entity.metadata),
        disabled=entity.disabled,
    )


def _check(method: str, error: str) -> None:
    if error:
        raise SystemViewError(f"Vault's system view call {method} failed: {error}")
