"""Entry point of the echo test plugin, the twin of `plugin/__main__.py`.

It imports a module that prints to stdout after the stdout guard, the way a
careless backend library would, so tests can check the handshake survives.
"""

from __future__ import annotations

from plugin.bridge import handshake


def main() -> None:
    handshake.prepare_process()
    from plugin.bridge.server import serve
    from tests.plugin_fixtures import noisy_module
    from tests.plugin_fixtures.echo_backend import new_backend

    assert noisy_module.PRINTED
    serve(new_backend)


if __name__ == "__main__":
    main()
