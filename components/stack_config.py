"""Reads the stack's `halab:` config once, at the top of the program, into a validated object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from halab import config
from halab.model import Lab
from halab.render import Credentials


@dataclass(frozen=True)
class StackConfig:
    lab: Lab
    credentials: pulumi.Output[Credentials]  # secret: the VRRP and stats passwords
    ssh_private_key: pulumi.Output[str] | None  # secret; None: the program generates a key pair


def _decode(value: Any) -> Any:
    """Pulumi hands structured values over as JSON text."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def raw_config() -> tuple[dict[str, Any], dict[str, str]]:
    """(every `halab:` key, with secret values masked) and (the secret values)."""
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key in sorted(keys):
        if not key.startswith(f"{config.NS}:"):
            continue
        value = runtime_config.get_config(key)
        name = key.split(":", 1)[1]
        if name in config.SECRET_KEYS and runtime_config.is_config_secret(key):
            raw[key] = config.Secure()
            secrets[name] = str(value)
        else:
            raw[key] = _decode(value)
    return raw, secrets


def load() -> StackConfig:
    """Raises ConfigError, listing every problem, before any resource exists."""
    raw, secrets = raw_config()
    lab = config.parse(raw, secrets=secrets)
    key = secrets.get("sshPrivateKey")
    return StackConfig(
        lab=lab,
        credentials=pulumi.Output.secret(
            Credentials(vrrp_auth_pass=secrets.get("vrrpAuthPass", ""), stats_password=secrets.get("statsPassword", ""))
        ),
        ssh_private_key=pulumi.Output.secret(key) if key is not None else None,
    )
