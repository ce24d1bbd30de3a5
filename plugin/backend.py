"""Every path of the agent-bridge mount, in one list.

`new_backend()` returns the object the protocol layer drives for one
mount: `config/identity` (which JWT auth mount names the agents) and the
`database/` paths. Further backends (`aws/`) register their own extension
here.
"""

from __future__ import annotations

from plugin.aws import aws_extension
from plugin.database import database_extension
from plugin.framework import Extension, FrameworkBackend
from plugin.identity import IDENTITY_CONFIG_KEY, identity_paths
from plugin.logical import Backend

BACKEND_HELP = """\
agent-bridge issues per-call credentials to AI agents. Each credential is
minted for one agent, identified by the name of its entity alias on the JWT
auth mount set in config/identity, and only when the role's allowed_agents
matches that name. database/ has the API of Vault's database secrets engine.
"""


def new_backend() -> Backend:
    """Return a backend for one mount; thread-safe, with its own pools."""
    backend = FrameworkBackend(BACKEND_HELP)
    backend.register(
        Extension(paths=identity_paths(), cached_storage=[IDENTITY_CONFIG_KEY])
    )
    backend.register(database_extension(lambda: backend.system))
    backend.register(aws_extension(lambda: backend.system))
    return backend
