"""Errors of the Terraform applier, each naming where in the module it arose."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class TfApplyError(Exception):
    """Base of every error the applier raises."""


class ConfigError(TfApplyError):
    """The module or its variables are invalid or use an unsupported feature."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location


class ExprError(TfApplyError):
    """An expression failed to evaluate; the caller adds where it was."""


class LintError(ConfigError):
    """The module evaluates, but breaks a security rule of agent-bridge."""


class VaultAPIError(TfApplyError):
    """Vault returned an error status for a request."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"Vault {method} {path} failed ({status}): {detail}")
        self.status = status
        self.path = path
