"""Command-line flags generated from a settings class, so each option is declared once: name, type, default, doc.

Every scalar field of a settings class (and of its nested groups) becomes a flag; its help is the field's
docstring with the default and, for top-level fields, the environment variable:

    class RewardSettings(ServiceSettings):
        timeout_s: Annotated[float, Flag("--timeout")] = Field(5.0, gt=0)
        \"\"\"Hard per-item time limit.\"\"\"

    specs = add_settings_flags(parser, RewardSettings)     # --timeout, --workers, --consume/--no-consume, ...
    settings = load_settings(RewardSettings, given_overrides(args, specs))

A field's flag is `--<name>` with `-` for `_` (`--<group>-<name>` inside a nested group) unless `Flag` names one.
`Flag(hidden=True)` keeps a field off the command line (secrets: a command line is visible to every local user in
`ps`). Flags default to None, so only what the user gave overrides the environment; `given_argv` renders those
back into flags (a launcher passing them on, e.g. to torchrun's workers).

Types: `bool` is `--x` / `--no-x`; `Literal[...]` gives choices; `int`, `float`, `str` and `Path` (or any of them
`| None`) one value; `list[str]` a repeatable flag. Fields of other types (maps, tuples) have no flag: they are set
through the environment or a dedicated flag of the entrypoint.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from aerplane.common.commands import ServiceCommand
from aerplane.common.settings import load_settings

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Flag:
    """`Annotated` metadata of a settings field: its flag name (default `--<field-name>`), or `hidden`."""

    name: str | None = None
    hidden: bool = False
    aliases: tuple[str, ...] = ()  # more spellings, e.g. ("-G",)


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One generated flag: `key` is the dotted settings key it sets, `dest` its argparse attribute."""

    flag: str
    key: str
    dest: str
    kind: str  # "value" | "bool" | "list"
    aliases: tuple[str, ...] = ()


def _flag_meta(info: FieldInfo) -> Flag:
    return next((m for m in info.metadata if isinstance(m, Flag)), Flag())


def _scalar(annotation: Any) -> tuple[str, Any, tuple[Any, ...] | None] | None:
    """(kind, argparse type, choices) of a field's annotation, or None when it has no flag form."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else None
    if origin is typing.Annotated:
        return _scalar(typing.get_args(annotation)[0])
    if origin is Literal:
        choices = typing.get_args(annotation)
        return "value", type(choices[0]), choices
    if origin is list and typing.get_args(annotation) == (str,):
        return "list", str, None
    if annotation is bool:
        return "bool", None, None
    if annotation in (int, float, str):
        return "value", annotation, None
    if annotation is Path:
        return "value", str, None
    return None


def _doc(info: FieldInfo) -> str:
    return re.sub(r"\s+", " ", info.description or "").strip()


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        return "" if value in ([], {}) or isinstance(value, BaseModel) else f"default: computed, e.g. {value}"
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None:
        return "default: unset"
    if isinstance(info.default, bool):
        return f"default: {'on' if info.default else 'off'}"
    return f"default: {info.default}"


def env_name(cls: type[BaseModel], name: str, info: FieldInfo) -> str | None:
    """The environment variable a top-level field of a settings class reads first (its alias or prefix + name)."""
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if isinstance(alias, str):
        return alias
    if choices:
        first = next((c for c in choices if isinstance(c, str) and c.isupper()), None)
        if first:
            return first
    prefix = cls.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper() if prefix else None


def settings_flags(cls: type[BaseModel]) -> list[tuple[FlagSpec, dict[str, Any]]]:
    """Every flag of `cls` with its argparse keyword arguments (nested groups become `--<group>-<field>`)."""
    out: list[tuple[FlagSpec, dict[str, Any]]] = []
    for name, info in cls.model_fields.items():
        meta = _flag_meta(info)
        if meta.hidden or info.exclude:
            continue
        annotation = info.annotation
        group = group_model(annotation)
        if group is not None:
            prefix = cls.model_config.get("env_prefix", "") if issubclass(cls, BaseSettings) else ""
            out += _group_flags(group, name, f"{prefix}{name}__".upper() if prefix else None)
            continue
        env = env_name(cls, name, info) if issubclass(cls, BaseSettings) else None
        built = _build(name, name, info, meta, env)
        if built is not None:
            out.append(built)
    return out


def _group_flags(group: type[BaseModel], prefix: str, env_prefix: str | None) -> list[tuple[FlagSpec, dict[str, Any]]]:
    out = []
    for name, info in group.model_fields.items():
        meta = _flag_meta(info)
        if meta.hidden:
            continue
        env = f"{env_prefix}{name.upper()}" if env_prefix else None
        built = _build(f"{prefix}.{name}", f"{prefix}_{name}", info, meta, env)
        if built is not None:
            out.append(built)
    return out


def group_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a settings group field (`Annotated[...]` unwrapped), or None for a plain field."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _build(key: str, stem: str, info: FieldInfo, meta: Flag, env: str | None) -> tuple[FlagSpec, dict] | None:
    scalar = _scalar(info.annotation)  # None for maps, tuples and secrets (SecretStr): no flag
    if scalar is None:
        return None
    kind, type_, choices = scalar
    flag = meta.name or "--" + stem.replace("_", "-")
    dest = "setting__" + key.replace(".", "__")
    notes = [t for t in (_default_text(info), f"env {env}" if env else "") if t]
    help_ = _doc(info) + (f" ({'; '.join(notes)})" if notes else "")
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_.replace("%", "%%")}
    if kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind == "list":
        kwargs.update(action="append", metavar="VALUE")
    else:
        kwargs["type"] = type_
        if choices is not None:
            kwargs["choices"] = choices
        else:
            kwargs["metavar"] = key.rsplit(".", 1)[-1].upper()
    return FlagSpec(flag=flag, key=key, dest=dest, kind=kind, aliases=meta.aliases), kwargs


def add_settings_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[BaseModel],
    *,
    only: Collection[str] | None = None,
) -> list[FlagSpec]:
    """Add a flag for every option of `cls` (or for the top-level fields named in `only`); returns their specs."""
    specs = []
    for spec, kwargs in settings_flags(cls):
        if only is not None and spec.key.split(".", 1)[0] not in only:
            continue
        parser.add_argument(spec.flag, *spec.aliases, **kwargs)
        specs.append(spec)
    return specs


def add_service_command(subparsers: argparse._SubParsersAction, service: ServiceCommand) -> argparse.ArgumentParser:
    """`aerplane <service> <command>` with one flag per option of its settings class. It builds the settings
    (environment, then the flags given), sets up logging and calls `service.serve` (imported only then, so that
    `--help` stays light) with them. Returns the command's parser."""
    settings = service.settings_class()
    parser = subparsers.add_parser(service.service, help=service.help)
    sub = parser.add_subparsers(dest=f"{service.service}_command", metavar="COMMAND", required=True)
    text = f"{service.description} Every option is also an environment variable (shown with it); a flag given wins."
    cmd = sub.add_parser(service.command, help=service.command_help, description=text)
    run = functools.partial(_run_service, settings_cls=settings, service=service.service, serve=service.serve)
    cmd.set_defaults(func=run, flags=add_settings_flags(cmd, settings))
    return cmd


def _run_service(args: argparse.Namespace, *, settings_cls: type[BaseModel], service: str, serve: str) -> int:
    from aerplane.common.logs import setup_logging

    settings = settings_from_args(settings_cls, args, args.flags, section=service)
    setup_logging(service, settings)
    module, name = serve.split(":")
    return int(getattr(importlib.import_module(module), name)(settings) or 0)


def given_overrides(args: argparse.Namespace, specs: Sequence[FlagSpec]) -> dict[str, Any]:
    """The flags the user gave, as a nested dict of settings keys for `load_settings` (flags not given left out)."""
    out: dict[str, Any] = {}
    for spec in specs:
        value = getattr(args, spec.dest, None)
        if value is not None:
            set_dotted(out, spec.key, value)
    return out


def settings_from_args(
    cls: type[S],
    args: argparse.Namespace,
    specs: Sequence[FlagSpec],
    *,
    section: str,
    extra: Mapping[str, Any] | None = None,
) -> S:
    """`cls` from the environment with `extra` (settings keys the entrypoint computed) and then the flags the user
    gave on top; an invalid value raises SettingsError naming the flag and the key, e.g.
    ``--steps (up.steps): Input should be greater than or equal to 1``."""
    overrides = dict(extra or {})
    for key, value in given_overrides(args, specs).items():
        base = overrides.get(key)
        overrides[key] = {**base, **value} if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    return load_settings(cls, overrides, section=section, labels=flag_labels(specs))


def flag_labels(specs: Sequence[FlagSpec]) -> dict[str, str]:
    """Settings key -> its flag, for errors that name what the user typed (`load_settings(labels=...)`)."""
    return {spec.key: spec.flag for spec in specs}


def given_argv(args: argparse.Namespace, specs: Sequence[FlagSpec]) -> list[str]:
    """The flags the user gave, rendered back as command-line arguments."""
    argv: list[str] = []
    for spec in specs:
        value = getattr(args, spec.dest, None)
        if value is not None:
            argv += _render(spec, value)
    return argv


def render_argv(cls: type[BaseModel], values: Mapping[str, Any]) -> list[str]:
    """The flags of `cls` that set `values` (settings keys; a nested dict per group), in `values`' order: how a
    launcher passes settings to a child process. A key that has no flag raises KeyError naming it."""
    specs = {spec.key: spec for spec, _ in settings_flags(cls)}
    argv: list[str] = []
    for key, value in _flatten(values):
        spec = specs.get(key)
        if spec is None:
            raise KeyError(f"{cls.__name__}: {key!r} has no command-line flag")
        if value is not None:
            argv += _render(spec, value)
    return argv


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, value in values.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", value))
    return out


def _render(spec: FlagSpec, value: Any) -> list[str]:
    if spec.kind == "bool":
        return [spec.flag if value else "--no-" + spec.flag[2:]]
    if spec.kind == "list":
        return [part for item in value for part in (spec.flag, str(item))]
    return [spec.flag, repr(value) if isinstance(value, float) else str(value)]


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """`tree["a"]["b"] = value` for `dotted` = "a.b", creating the parents."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value
