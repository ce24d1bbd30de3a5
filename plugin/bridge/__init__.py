"""Vault's backend plugin protocol (go-plugin protocol 5) for Python backends.

`plugin.bridge.server.serve(factory)` runs a plugin process: it completes
Vault's handshake, terminates mutual TLS, serves `pb.Backend` and the
go-plugin services over gRPC, and drives one `plugin.logical.Backend` per
mount. This package imports nothing at import time, so an entry point can
guard stdout (`plugin.bridge.handshake`) before the heavy imports.
"""
