"""The `agent-attestor` daemon: socket and JWKS servers, workers and rate limits."""
