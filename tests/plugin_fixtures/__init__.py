"""Test-only backends and entry points for the plugin bridge."""
