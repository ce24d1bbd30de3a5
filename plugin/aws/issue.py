"""The call context shared by every credential type: caller, role, clients."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from plugin.aws.backend import AwsBackend, Clients
from plugin.aws.roles import RoleEntry
from plugin.identity import Caller
from plugin.logical import Request

# Characters AWS accepts in tag values; others become `_`.
_TAG_UNSAFE = re.compile(r"[^\w .:/=+@-]")


@dataclass(frozen=True)
class Issue:
    """One credential being minted: for which agent, from which role."""

    backend: AwsBackend
    request: Request
    role_name: str
    role: RoleEntry
    caller: Caller
    clients: Clients

    def alias_call_id(self) -> str:
        """Return the call id of the agent's latest login, or "".

        One alias serves all logins of an agent, so a concurrent call of the
        same agent may have overwritten it.
        """
        metadata = self.caller.metadata
        return next((metadata[k] for k in ("call_id", "jti") if metadata.get(k)), "")

    def identity_tags(self) -> dict[str, str]:
        """Return the tags that tie a created IAM user to this call."""
        tags = {
            "agent-bridge:agent": self.caller.agent,
            "agent-bridge:role": self.role_name,
            "agent-bridge:token-accessor": self.request.client_token_accessor,
            "agent-bridge:alias-call-id": self.alias_call_id(),
        }
        return {k: _TAG_UNSAFE.sub("_", v) for k, v in tags.items() if v}

    def endpoint_data(self) -> dict[str, Any]:
        """Return `region` and `endpoint_url`, the extensions of the creds data."""
        config = self.clients.config
        data: dict[str, Any] = {"region": config.effective_region()}
        url = config.client_endpoint_url()
        if url:
            data["endpoint_url"] = url
        return data

    def internal_data(self, credential_type: str) -> dict[str, Any]:
        """Return the `internal_data` fields every credential type stores."""
        return {
            "credential_type": credential_type,
            "role": self.role_name,
            "agent": self.caller.agent,
            "token_accessor": self.request.client_token_accessor,
        }
