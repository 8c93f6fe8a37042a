"""One config dataclass per stage, loaded from YAML and overridable on the command line.

``load_config(TrainConfig, "training.yaml", ["epochs=3", "model.hidden=[256,128]"])``
merges, in order: the dataclass defaults, the YAML file, then ``key=value`` overrides
(values parsed as YAML, dotted keys reach nested dataclasses). Unknown keys are errors,
so a typo never silently falls back to a default.

Config classes are declared with :func:`stage_config`, a pydantic dataclass: field types,
ranges (``Annotated[int, Field(ge=1)]``, :data:`PositiveInt`, :data:`Fraction`) and dates
(:data:`IsoDate`) are checked by pydantic when the object is built, from YAML, from the
command line or in code, and every failure becomes one :class:`ConfigError` line naming
the key, the rule and the value given.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic import dataclasses as pydantic_dataclasses
from typing_extensions import dataclass_transform

from lookalike.errors import ConfigError

T = TypeVar("T")


def _iso_date(value: str) -> str:
    """An ISO date or timestamp (``2026-11-22``, ``2026-11-22T06:00:00+00:00``); "" means unset."""
    if value:
        try:
            date.fromisoformat(value)
        except ValueError:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"not an ISO date (YYYY-MM-DD): {value!r}") from None
    return value


IsoDate = Annotated[str, AfterValidator(_iso_date)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
# An output or input location: a local path or a URI (file://, s3a://, gs://, hdfs://). Kept as
# text, because pathlib folds "s3a://b/k" into "s3a:/b/k".
Location = Annotated[str | Path, BeforeValidator(lambda value: str(value) if isinstance(value, PurePath) else value)]


class ConfigValidationError(ConfigError, ValueError):
    """A config object refused by validation; keeps the failing keys so a nested section
    built from YAML can be reported under its dotted path."""

    def __init__(self, cls_name: str, problems: list[tuple[str, str]]) -> None:
        self.cls_name = cls_name
        self.problems = problems
        super().__init__(self.message(cls_name))

    def message(self, where: str) -> str:
        """``where.key: problem`` per failing key; ``where`` is "" for a top-level config."""
        parts = []
        for key, problem in self.problems:
            path = ".".join(part for part in (where, key) if part) or self.cls_name
            parts.append(f"{path}: {problem}")
        return "; ".join(parts)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] not in ("value_error", "assertion_error"):
            message = f"{message}, got {error.get('input')!r}"
        problems.append((key, message))
    return problems


@dataclass_transform(field_specifiers=(dataclasses.field, Field))
def stage_config(cls: type[T]) -> type[T]:
    """Declare a stage config: a pydantic dataclass whose validation errors are ConfigErrors."""
    built = pydantic_dataclasses.dataclass(cls)
    validated_init = built.__init__

    @functools.wraps(validated_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigValidationError(cls.__name__, _problems(exc)) from None

    built.__init__ = __init__  # type: ignore[method-assign]
    return built  # type: ignore[return-value]


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        tp = _unwrap_optional(hints[key])
        path = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[key] = _build(tp, value, path)  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, tp, path)
    try:
        return cls(**kwargs)
    except ConfigValidationError as exc:
        raise ConfigError(exc.message(where)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _coerce(value: Any, tp: Any, path: str) -> Any:
    if value is None:
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # YAML reads `2026-11-22` as a date and `7` as an int; strings are what we want.
        return str(value)
    if tp is str and hasattr(value, "isoformat"):
        return value.isoformat()
    if tp is Path:
        return Path(value)
    origin = typing.get_origin(tp)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{path}[]") for v in value]
        return tuple(items) if origin is tuple else items
    if tp in (int, float, bool, str) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}")
    return value


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=3", "name=x"]`` into a nested dict, values parsed as YAML scalars."""
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        except ValueError:
            # Looks like a YAML date but is not one (2026-13-45): keep the text, validation names it.
            value = raw
        _set_dotted(result, key.strip(), value)
    return result


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()
) -> T:
    """Build ``cls`` from defaults, then the YAML file at ``path``, then ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"{path}: a date-like value is not a valid date ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        values = loaded
    values = _deep_merge(values, parse_overrides(overrides))
    return _build(cls, values, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a config dataclass (paths become strings)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return typing.cast(dict[str, Any], convert(config))


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def cli_overrides(args: Any, flags: Sequence[str] | dict[str, str]) -> list[str]:
    """``key=value`` overrides from a stage CLI: positional overrides, then the named flags
    that were given (argparse dest -> config key; a plain list keeps the same name)."""
    mapping = dict(flags) if isinstance(flags, dict) else {flag: flag for flag in flags}
    overrides = list(getattr(args, "overrides", None) or [])
    for dest, key in mapping.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides
