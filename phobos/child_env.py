"""The environment of each process Phobos starts: only the secrets its role uses.

`phobos up` runs a worker and the adapters as children. Each gets this process's environment without
the secrets of other roles: the worker never holds a Slack or Discord token, an adapter never holds
HF_TOKEN or OPENAI_API_KEY. Which variables are secrets is read from :class:`~phobos.settings.Settings`
(every ``SecretStr`` setting, and HF_TOKEN_FILE, which points at one), so a secret added there is
withheld from every child until :data:`ROLE_SECRETS` gives it to a role. The embedded redis-server
and the file reader get an allow-list with no secret at all (:func:`core.child_process.allowed_environment`).

Settings also reads a ``.env`` file in the working directory; a child started there reads it too, so a
deployment that wants the separation keeps secrets in the environment (or per-service secret files),
not in a shared ``.env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import SecretStr

from core.env_settings import declared_fields, env_names
from phobos.settings import Settings

# role (the `phobos` command a child runs) -> the secret variables it uses
ROLE_SECRETS: dict[str, frozenset[str]] = {
    "worker": frozenset({"REDIS_URL", "HF_TOKEN", "HF_TOKEN_FILE", "OPENAI_API_KEY"}),
    "slack": frozenset({"REDIS_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"}),
    "discord": frozenset({"REDIS_URL", "DISCORD_TOKEN"}),
    "console": frozenset({"REDIS_URL"}),
}
SECRET_POINTERS = frozenset({"HF_TOKEN_FILE"})  # not secret themselves, but name a file that is


def secret_names() -> frozenset[str]:
    """Every environment variable Settings declares as a secret."""
    names = set(SECRET_POINTERS)
    for _section, _name, field in declared_fields(Settings):  # the sections' fields too (settings.slack, ...)
        if field.annotation is SecretStr:
            names.update(env_names(field))
    return frozenset(names)


def environment_for(role: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child running ``phobos ROLE``: other roles' secrets removed."""
    withheld = secret_names() - ROLE_SECRETS.get(role, frozenset())
    env = {name: value for name, value in os.environ.items() if name not in withheld}
    env.update(extra or {})
    return env
