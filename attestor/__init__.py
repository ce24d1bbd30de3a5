"""Kernel-attested identities for AI agents, and the agent-exec wrapper.

`client` and `protocol` speak the attestor's socket protocol with the
standard library alone, so programs of other users can import them with the
system Python. `cli` is `agent-attestor`; the daemon behind it is split into
`inspection` (who the peer process is), `policy` (which agent that makes
it), `signing` (keys and JWTs) and `server` (sockets, workers, logs).
`agent_exec` is the `agent-exec` wrapper, and `login` exchanges a JWT for a
Vault token.
"""
