"""Stored settings of the AWS backend: `aws/config/root` and `aws/config/lease`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from plugin.aws.errors import ConfigNotFoundError
from plugin.framework import load_entry, save_entry
from plugin.logical import Storage

ROOT_KEY = "aws/config/root"
LEASE_KEY = "aws/config/lease"
DEFAULT_REGION = "us-east-1"
# How long a creds read waits for a new access key to authenticate. Real IAM
# usually takes a few seconds; Vault's default request timeout is 90 s.
DEFAULT_KEY_READY_TIMEOUT = 30


@dataclass
class RootConfig:
    """The credentials and endpoints the plugin calls IAM and STS with.

    Empty keys mean boto3's default credential chain of the Vault host.
    `max_retries` -1 keeps the SDK's default retry count.
    """

    access_key: str = ""
    secret_key: str = ""
    region: str = ""
    iam_endpoint: str = ""
    sts_endpoint: str = ""
    max_retries: int = -1
    username_template: str = ""
    endpoint_url: str = ""
    key_ready_timeout: int = DEFAULT_KEY_READY_TIMEOUT

    def effective_region(self) -> str:
        """Return the region, else the host's AWS_REGION, else us-east-1."""
        return (
            self.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or DEFAULT_REGION
        )

    def client_endpoint_url(self) -> str:
        """Return the endpoint URL handed to credential holders, or "".

        An explicit `endpoint_url` wins. Otherwise holders get the custom
        endpoint that IAM and STS share, because one endpoint for both is an
        emulator such as moto that serves every service. Distinct endpoints
        are specific to IAM and STS, so holders get none and use AWS's own.
        """
        if self.endpoint_url:
            return self.endpoint_url
        if self.iam_endpoint and self.iam_endpoint == self.sts_endpoint:
            return self.iam_endpoint
        return ""

    def to_response(self) -> dict[str, object]:
        """Return the config as Vault's read shows it: no secret key."""
        return {
            "access_key": self.access_key,
            "region": self.region,
            "iam_endpoint": self.iam_endpoint,
            "sts_endpoint": self.sts_endpoint,
            "max_retries": self.max_retries,
            "username_template": self.username_template,
            "endpoint_url": self.endpoint_url,
            "key_ready_timeout": self.key_ready_timeout,
        }


@dataclass
class LeaseConfig:
    """`aws/config/lease`, in seconds; zero means the mount's value."""

    lease: int = 0
    lease_max: int = 0


def load_root(storage: Storage) -> RootConfig | None:
    return load_entry(storage, ROOT_KEY, RootConfig)


def require_root(storage: Storage) -> RootConfig:
    """Return the root config, or raise ConfigNotFoundError."""
    config = load_root(storage)
    if config is None:
        raise ConfigNotFoundError(
            "aws/config/root is not configured: write access_key, secret_key and "
            "region to aws/config/root first"
        )
    return config


def save_root(storage: Storage, config: RootConfig) -> None:
    save_entry(storage, ROOT_KEY, config)


def load_lease(storage: Storage) -> LeaseConfig:
    """Return the lease config; all zeros when it was never written."""
    return load_entry(storage, LEASE_KEY, LeaseConfig) or LeaseConfig()


def save_lease(storage: Storage, lease: LeaseConfig) -> None:
    save_entry(storage, LEASE_KEY, lease)


def go_duration(seconds: int) -> str:
    """Format seconds as Go's `time.Duration.String()` does: 1h0m0s, 30m0s, 45s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
