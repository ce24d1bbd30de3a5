"""The embedded stack: OpenBao, PostgreSQL, moto and the attestor on 127.0.0.1.

`scripts/dev-stack` drives it from a shell; the test suite starts its own copy
in a temporary folder through `devstack.stack`.
"""
