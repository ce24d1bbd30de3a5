"""The version the plugin reports to Vault (`logical.PluginVersion`).

Vault compares it with the `-version` given to `plugin register` and refuses
a mismatch; without `-version`, Vault registers the plugin under the
version it reports. `AGENT_BRIDGE_PLUGIN_VERSION` (set through the catalog
entry's `env`) overrides the version that scripts/build-plugin writes
into the file (`plugin.bridge._build_info`), and that one overrides the
version of the installed `agent-bridge` distribution (development runs).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os

logger = logging.getLogger(__name__)

VERSION_ENV = "AGENT_BRIDGE_PLUGIN_VERSION"
DISTRIBUTION = "agent-bridge"


def plugin_version() -> str:
    """Return the version as Vault expects it: semantic, with a leading "v"."""
    version = os.environ.get(VERSION_ENV, "").strip() or _built_version()
    if not version:
        try:
            version = importlib.metadata.version(DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            logger.warning(
                "no version to report: %s is unset and the %s distribution "
                "is not installed",
                VERSION_ENV,
                DISTRIBUTION,
            )
            return ""
    return version if version.startswith("v") else f"v{version}"


def _built_version() -> str:
    try:
        from plugin.bridge import _build_info  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return ""
    return str(_build_info.VERSION)
