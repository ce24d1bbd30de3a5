"""Entry point of the agent-bridge Vault plugin (`python -m plugin`).

Vault starts this (usually as the single file built by scripts/build-plugin)
and speaks the plugin protocol to it. Backend libraries load when the first
mount is set up, so the handshake is not delayed by them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from plugin.bridge import handshake
from plugin.logical import Backend


def new_backend() -> Backend:
    """Return a backend for one mount of the plugin."""
    module = importlib.import_module("plugin.backend")
    factory: Callable[[], Backend] = module.new_backend
    return factory()


def main() -> None:
    """Check that Vault started us, then serve until Vault stops the plugin."""
    handshake.prepare_process()
    # Imported only now, so nothing a module prints can reach stdout.
    from plugin.bridge.server import serve

    serve(new_backend)


if __name__ == "__main__":
    main()
