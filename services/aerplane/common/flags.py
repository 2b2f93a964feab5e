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
`| None`) one value; `list[str]` (or of `int`, `float`, `Path`) a repeatable flag, or with `Flag(nargs="+")` one flag
followed by its values. A `Flag` name without a leading `-` is a positional argument (`Flag("RUN_DIR", nargs="+")`).
Fields of other types (maps, tuples) have no flag: they are set through the environment or a dedicated flag of the
entrypoint.

A strategy is spelled one way on every command line, `--strategy NAME[:KEY=VALUE...]` (`STRATEGY_FLAG`, read by
`core.strategies.parse_spec`); `strategy_epilog` lists every strategy's parameters for `--help`, and
`warn_old_spelling` is the one line an old spelling (`--eta X`, `--param`, `--strategy-param`) logs.

A service's `aerplane <service> <command>` is a `ServiceCommand` (declared in
`aerplane.launcher.services.SERVICES`) that `add_service_command` turns into a subcommand with these flags.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import textwrap
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from aerplane.common.settings import load_settings

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    """`aerplane <service> <command>`: the settings class its flags come from and the function it runs. The
    service's `serve` (its app.py) imports its servers and engines only when it runs."""

    service: str
    command: str
    settings: type[BaseModel]
    serve: Callable[[Any], int | None] | None  # None where an entry module registers it (the learner: torchrun)
    help: str = ""
    command_help: str = ""
    description: str = ""

    @property
    def argv(self) -> tuple[str, str]:
        return self.service, self.command


@dataclass(frozen=True, slots=True)
class Flag:
    """`Annotated` metadata of a settings field: how its flag is spelled, or `hidden`.

    `name` defaults to `--<field-name>` (a name without a leading `-` is a positional argument); `metavar` names its
    value in `--help`; `nargs="+"` takes a list as one flag and its values; `parse` is argparse's `type`, for a value
    with a syntax of its own (a `Literal` field then has no argparse choices: the settings check the value); `note`
    follows the field's doc in `--help` (how such a value is spelled)."""

    name: str | None = None
    hidden: bool = False
    aliases: tuple[str, ...] = ()  # more spellings, e.g. ("-G",)
    metavar: str | None = None
    nargs: str | None = None
    parse: Callable[[str], Any] | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One generated flag: `key` is the dotted settings key it sets, `dest` its argparse attribute."""

    flag: str
    key: str
    dest: str
    kind: str  # "value" | "bool" | "list"
    aliases: tuple[str, ...] = ()
    nargs: str | None = None

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")


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
    if origin is list and typing.get_args(annotation)[:1] in ((str,), (int,), (float,), (Path,)):
        item = typing.get_args(annotation)[0]
        return "list", str if item is Path else item, None
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
        if value == []:
            return "default: none"
        return "" if value == {} or isinstance(value, BaseModel) else f"default: computed, e.g. {value}"
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


def settings_flags(
    cls: type[BaseModel], flags: Mapping[str, Flag] | None = None
) -> list[tuple[FlagSpec, dict[str, Any]]]:
    """Every flag of `cls` with its argparse keyword arguments (nested groups become `--<group>-<field>`). `flags`
    (settings key -> Flag) spells some differently from their fields' own `Flag`: an entrypoint's own syntax."""
    out: list[tuple[FlagSpec, dict[str, Any]]] = []
    for name, info in cls.model_fields.items():
        meta = (flags or {}).get(name) or _flag_meta(info)
        if meta.hidden or info.exclude:
            continue
        annotation = info.annotation
        group = group_model(annotation)
        if group is not None:
            prefix = cls.model_config.get("env_prefix", "") if issubclass(cls, BaseSettings) else ""
            out += _group_flags(group, name, f"{prefix}{name}__".upper() if prefix else None, flags or {})
            continue
        env = env_name(cls, name, info) if issubclass(cls, BaseSettings) else None
        built = _build(name, name, info, meta, env)
        if built is not None:
            out.append(built)
    return out


def _group_flags(
    group: type[BaseModel], prefix: str, env_prefix: str | None, flags: Mapping[str, Flag]
) -> list[tuple[FlagSpec, dict[str, Any]]]:
    out = []
    for name, info in group.model_fields.items():
        meta = flags.get(f"{prefix}.{name}") or _flag_meta(info)
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
    help_ = " ".join(t for t in (_doc(info), meta.note) if t) + (f" ({'; '.join(notes)})" if notes else "")
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_.replace("%", "%%")}
    if kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind == "list":
        kwargs.update(type=type_, metavar=meta.metavar or "VALUE")
        kwargs.update({"nargs": meta.nargs} if meta.nargs else {"action": "append"})
    else:
        kwargs["type"] = meta.parse or type_
        if meta.nargs:  # e.g. "?": an optional positional
            kwargs["nargs"] = meta.nargs
        if choices is not None and meta.parse is None:
            kwargs["choices"] = choices
        else:
            kwargs["metavar"] = meta.metavar or key.rsplit(".", 1)[-1].upper()
    if not flag.startswith("-"):  # a positional argument: its name in --help is the flag's
        kwargs["metavar"] = flag
    return FlagSpec(flag=flag, key=key, dest=dest, kind=kind, aliases=meta.aliases, nargs=meta.nargs), kwargs


def add_settings_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[BaseModel],
    *,
    only: Collection[str] | None = None,
    flags: Mapping[str, Flag] | None = None,
) -> list[FlagSpec]:
    """Add a flag for every option of `cls` (or for the top-level fields named in `only`; `flags` as in
    `settings_flags`); returns their specs."""
    specs = []
    for spec, kwargs in settings_flags(cls, flags):
        if only is not None and spec.key.split(".", 1)[0] not in only:
            continue
        if spec.positional:  # argparse takes a positional's dest as its first name
            parser.add_argument(kwargs.pop("dest"), **kwargs)
        else:
            parser.add_argument(spec.flag, *spec.aliases, **kwargs)
        specs.append(spec)
    return specs


def add_service_command(subparsers: argparse._SubParsersAction, service: ServiceCommand) -> argparse.ArgumentParser:
    """`aerplane <service> <command>` with one flag per option of its settings class. It builds the settings
    (environment, then the flags given), sets up logging and calls `service.serve` with them. Returns the command's
    parser."""
    settings = service.settings
    parser = subparsers.add_parser(service.service, help=service.help)
    sub = parser.add_subparsers(dest=f"{service.service}_command", metavar="COMMAND", required=True)
    text = f"{service.description} Every option is also an environment variable (shown with it); a flag given wins."
    cmd = sub.add_parser(service.command, help=service.command_help, description=text)
    run = functools.partial(_run_service, settings_cls=settings, service=service.service, serve=service.serve)
    cmd.set_defaults(func=run, flags=add_settings_flags(cmd, settings))
    return cmd


def _run_service(
    args: argparse.Namespace, *, settings_cls: type[BaseModel], service: str, serve: Callable[[Any], int | None]
) -> int:
    from aerplane.common.logs import setup_logging

    settings = settings_from_args(settings_cls, args, args.flags, section=service)
    setup_logging(service, settings)
    return int(serve(settings) or 0)


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
    items = [repr(v) if isinstance(v, float) else str(v) for v in (value if spec.kind == "list" else [value])]
    if spec.positional:
        return items
    if spec.kind == "list" and not spec.nargs:
        return [part for item in items for part in (spec.flag, item)]
    return [spec.flag, *items]


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """`tree["a"]["b"] = value` for `dotted` = "a.b", creating the parents."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


# --- the one spelling of a strategy on every command line ------------------------------------------------------------

STRATEGY_FLAG = Flag(
    "--strategy",
    metavar="NAME[:KEY=VALUE...]",
    parse=str,  # the name is checked with the parameters, in one line (core.strategies.build_strategy)
    note="Spelled NAME[:KEY=VALUE...], e.g. aer:eta=0.01:alpha_max=0.03 (every strategy's parameters are listed "
    "below).",
)
"""`--strategy` of `aerplane up`, `aerplane simulate`, `aerplane learner train` and `python -m aerplane.learner`:
the strategy and its parameters in one value (`core.strategies.parse_spec`)."""


def strategy_epilog(old: str) -> str:
    """The `--help` reference of every strategy's parameters (`core.strategies.parameter_table`); `old` is a
    sentence on the command's old spellings, which still work."""
    from aerplane.core.strategies import parameter_table

    head = (
        "strategies and their parameters, KEY=DEFAULT (range) doc: give them as --strategy NAME:KEY=VALUE:..., e.g. "
        f"--strategy aer:eta=0.01:alpha_max=0.03 (KEY=none: the default). {old}"
    )
    return "\n".join([textwrap.fill(head, 100), *parameter_table()])  # wrapped for a raw formatter too


def warn_old_spelling(old: Sequence[str], new: str) -> None:
    """The one line an old spelling logs, naming what replaces it: `--eta is an old spelling: use --strategy
    aer:eta=0.01`."""
    verb = "is an old spelling" if len(old) == 1 else "are old spellings"
    logging.getLogger(__name__).warning("%s %s: use %s", ", ".join(old), verb, new)


OLD_PARAM_DEST = "old_strategy__"  # + a parameter's name: the dest of its old flag (`--eta` → old_strategy__eta)
OLD_SPELLINGS = (
    "The old spellings --eta 0.01 (a flag per parameter) and --param eta=0.01 still work and log their replacement."
)


def add_old_strategy_flags(parser: argparse.ArgumentParser) -> None:
    """The old spellings of `--strategy NAME:KEY=VALUE` on `aerplane up` and `aerplane simulate`, which keep working:
    a flag per parameter of every strategy (`--eta X`, dest `old_strategy__eta`; out of `--help`, where the parameter
    table stands for them) and the repeatable `--param KEY=VALUE`. `old_strategy_params` reads them back."""
    from aerplane.core.strategies import OPTION_VALUES, all_params

    group = parser.add_argument_group(
        "old spellings of --strategy's parameters (still work; each logs its replacement)"
    )
    for name in all_params():
        kind = {"metavar": "NAME"} if name in OPTION_VALUES else {"type": float, "metavar": "X"}
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, dest=OLD_PARAM_DEST + name, default=None, help=argparse.SUPPRESS, **kind)
    group.add_argument(
        "--param",
        dest=OLD_PARAM_DEST + "_pairs",
        action="append",
        metavar="KEY=VALUE",
        help="--strategy NAME:KEY=VALUE in the old spelling (repeatable); so is --KEY VALUE, a flag for each "
        "parameter listed below: --eta 0.01 is --strategy aer:eta=0.01",
    )


def _old_strategy_flags(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The parameters the old spellings gave (`--eta X`, then `--param KEY=VALUE`), and those flags as typed."""
    from aerplane.core.strategies import all_params, parse_params

    values: dict[str, Any] = {}
    used: list[str] = []
    for name in all_params():
        value = getattr(args, OLD_PARAM_DEST + name, None)
        if value is not None:
            values[name] = value
            used.append("--" + name.replace("_", "-"))
    pairs = getattr(args, OLD_PARAM_DEST + "_pairs", None) or []
    values.update(parse_params(pairs, "--param"))
    return values, used + (["--param"] if pairs else [])


def old_strategy_params(args: argparse.Namespace) -> dict[str, Any]:
    """The strategy parameters given in the old spellings (`--eta X`, then `--param KEY=VALUE`): what
    `core.strategies.resolve_strategy` takes as `given`. Raises ValueError for a `--param` without KEY=VALUE."""
    return _old_strategy_flags(args)[0]


def warn_old_strategy_flags(args: argparse.Namespace, name: str) -> None:
    """If old spellings were given, log the one line naming their replacement: `--eta is an old spelling: use
    --strategy aer:eta=0.01`, with the parameters `--strategy` gave itself (`name`: the strategy that runs). Called
    once the strategy is valid, so that an error is the only line a bad value prints."""
    from aerplane.core.strategies import format_spec, parse_spec

    values, used = _old_strategy_flags(args)
    if used:
        spec = getattr(args, "setting__strategy", None)
        typed = parse_spec(spec)[1] if spec else {}
        warn_old_spelling(used, "--strategy " + format_spec(name, {**typed, **values}))


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that lines indented by two spaces in a description or epilog keep their line
    breaks (the strategy parameter table); the rest is reflowed as usual."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        prose: list[str] = []
        for line in [*text.splitlines(), ""]:
            if line.strip() and not line.startswith("  "):
                prose.append(line)
                continue
            if prose:
                out.append(super()._fill_text(" ".join(prose), width, indent))
                prose = []
            out.append(indent + line if line.strip() else "")
        return "\n".join(out).rstrip("\n")
