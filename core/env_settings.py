"""The base of every settings section: a component's settings, read from the variables it declares and nothing else.

Each component declares its section next to its code (``bot/slack/settings.py``, ``telemetry/settings.py``,
...) and ``phobos/settings.py`` composes them; the component is then handed its section whole. A field is an
environment variable only when it names one (``validation_alias=env("PHOBOS_...")``): pydantic-settings would
otherwise also read a variable spelled like the field (``MODE``, ``TOKEN``, ``SLACK``), and a stray one of those
in a shell or a container would change, or break, a setting nobody meant to set. Tests build sections by field
name (``SlackSettings(bot_token=...)``); that stays allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


def env(*names: str) -> AliasChoices:
    """The environment variable(s) a field is read from, the first preferred."""
    return AliasChoices(*names)


def env_names(field: FieldInfo) -> list[str]:
    """The environment variables ``field`` declares; none for a field that is not read from the environment."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [alias] if isinstance(alias, str) else []


class _DeclaredNamesOnly(EnvSettingsSource):
    """An environment source that reads a field from the variables it declares, never from its field name."""

    def _extract_field_info(self, field: FieldInfo, field_name: str,
                            model_config: Mapping[str, Any] | None = None) -> list[tuple[str, str, bool]]:
        found = super()._extract_field_info(field, field_name, model_config)
        declared = [entry for entry in found if entry[0] != field_name]
        return declared or found

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if not env_names(field):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _DotEnvDeclaredNamesOnly(_DeclaredNamesOnly, DotEnvSettingsSource):
    """The same rule for the ``.env`` file, whose other lines are ignored rather than passed on as extra inputs
    (a ``slack=...`` line would otherwise reach the section by its field name)."""

    def __call__(self) -> dict[str, Any]:
        return EnvSettingsSource.__call__(self)


class EnvSection(BaseSettings):
    """A settings section: variables from the environment or ``.env``, unknown ones ignored."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The sources pydantic-settings built (with any _env_file given at construction), narrowed to declared
        # names: the subclasses only override how a field's variable names are chosen.
        if type(env_settings) is EnvSettingsSource:
            env_settings.__class__ = _DeclaredNamesOnly
        if type(dotenv_settings) is DotEnvSettingsSource:
            dotenv_settings.__class__ = _DotEnvDeclaredNamesOnly
        return init_settings, env_settings, dotenv_settings, file_secret_settings


def section_fields(settings_cls: type[BaseSettings]) -> dict[str, type[BaseSettings]]:
    """The fields of ``settings_cls`` that are settings sections of their own, by field name."""
    found = {}
    for name, field in settings_cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            found[name] = annotation
    return found


def declared_fields(settings_cls: type[BaseSettings]) -> list[tuple[type[BaseSettings], str, FieldInfo]]:
    """``(section, field name, field)`` for every field of ``settings_cls`` and of the sections composed into it,
    sections themselves left out: everything that may be read from the environment."""
    found: list[tuple[type[BaseSettings], str, FieldInfo]] = []
    sections = section_fields(settings_cls)
    for name, field in settings_cls.model_fields.items():
        if name in sections:
            found.extend(declared_fields(sections[name]))
        else:
            found.append((settings_cls, name, field))
    return found
