"""Reads the stack's `halab:` config once, at the top of the program, into a validated object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from halab.core import config, stackfile
from halab.core.model import Credentials, Lab


@dataclass(frozen=True)
class StackConfig:
    lab: Lab
    # The VRRP and stats passwords, as the config holds them: they reach a resource only inside
    # a secret Output (a step's bundle: components/remote_steps.py), and never print (repr).
    credentials: Credentials
    ssh_private_key: pulumi.Output[str] | None  # secret; None: the program generates a key pair


def raw_config() -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(every `halab:` key, with secret values masked), (the secret values), and the problems
    of keys in the project's own namespace: `pulumi config set vip ...` (no `halab:`) writes
    `ha-lb-lab:vip`, which the program would otherwise ignore, deploying the defaults."""
    keys = sorted(set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env()))
    ours = [k for k in keys if k.startswith(f"{config.NS}:")]
    project = pulumi.get_project()
    misplaced = [
        f"{k}: this project reads {config.NS}:<key>: pulumi config set {config.NS}:{k.partition(':')[2]} ..."
        for k in keys
        if k.startswith(f"{project}:") and project != config.NS
    ]
    raw, secrets = stackfile.from_pulumi(
        (k, runtime_config.get_config(k), runtime_config.is_config_secret(k)) for k in ours
    )
    return raw, secrets, misplaced


def load() -> StackConfig:
    """Raises ConfigError, listing every problem (misplaced keys included), before any resource
    exists."""
    raw, secrets, misplaced = raw_config()
    try:
        lab = config.parse(raw, secrets=secrets)
    except config.ConfigError as e:
        raise config.ConfigError(misplaced + e.problems) from None
    if misplaced:
        raise config.ConfigError(misplaced)
    key = secrets.get("sshPrivateKey")
    return StackConfig(
        lab=lab,
        credentials=Credentials(
            vrrp_auth_pass=secrets.get("vrrpAuthPass", ""),
            stats_password=secrets.get("statsPassword", ""),
            bgp_password=secrets.get("bgpPassword", ""),
        ),
        ssh_private_key=pulumi.Output.secret(key) if key is not None else None,
    )
