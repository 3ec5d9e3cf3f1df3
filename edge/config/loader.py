"""Load and validate the YAML config: unknown keys and wrong types are errors naming the key."""


import dataclasses
import difflib
import logging
import math
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from edge.config.checks import problems
from edge.config.schema import Config
from edge.errors import ConfigError

logger = logging.getLogger(__name__)


def load_config(path: Optional[Union[str, Path]]) -> Config:
    """Read a config file; None gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: pass --config with an existing YAML file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKeyError as exc:
        raise ConfigError(f"config file {path}: {exc}: keep one of them") from None
    except _AliasError as exc:
        raise ConfigError(f"config file {path}: {exc}: write the value out where it is used") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply: a config has sections one level deep") from None
    except ValueError:  # YAML's int(): a number of more than 4,300 digits
        raise ConfigError(f"config file {path} holds a number too long to read: no setting needs more than "
                          f"a few digits") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}): check its permissions") from None
    if raw is None:
        raw = {}
    try:
        config = config_from_dict(raw, source=str(path))
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply: a config has sections one level deep") from None
    logger.debug("loaded config from %s", path)
    return config


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _AliasError(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently), 1e308 is a number (YAML 1.1 wants a dot in it), and aliases (*name) are
    refused: a config has no use for them, and nested ones expand exponentially (a 1 KB "alias
    bomb" took 4.9 GB and two minutes to report)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasError(f"it uses the YAML alias *{event.anchor} (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if duplicate:
                raise _DuplicateKeyError(f"key '{key}' appears twice (line {key_node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """A Config from parsed YAML; every problem (unknown keys, wrong types, broken rules) is
    reported at once, on one line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    found: List[str] = []
    config = _build(Config, raw, "", found)
    found += problems(config)
    if len(found) == 1:
        raise ConfigError(f"{source}: {found[0]}")
    if found:
        raise ConfigError(f"{source}: {len(found)} problems: " + "; ".join(found))
    return config


class _BadValueError(Exception):
    """A value of the wrong type; its text names the key."""


def _build(cls: type, raw: Dict[str, Any], prefix: str, found: List[str]) -> Any:
    """An instance of the section `cls`; keys that are unknown or of the wrong type are noted in
    `found` and left at their defaults, so the rest of the file is still checked."""
    raw = _renamed_keys(cls, raw, prefix, found)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: Dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            shown = dotted.encode("unicode_escape").decode("ascii")  # one line, whatever the key holds
            found.append(f"unknown key '{shown}'{hint}")
            continue
        try:
            values[key] = _convert(hints[key], value, dotted, found)
        except _BadValueError as exc:
            found.append(str(exc))
    return cls(**values)


def _renamed_keys(cls: type, raw: Dict[str, Any], prefix: str, found: List[str]) -> Dict[str, Any]:
    """Keys an older schema had (a section's RENAMED: old key -> "section.key"), moved to their
    place, so files that loaded before still load."""
    renamed = getattr(cls, "RENAMED", {})
    if not any(key in raw for key in renamed):
        return raw
    raw = dict(raw)
    for old, new in renamed.items():
        if old not in raw:
            continue
        section, _, key = new.partition(".")
        nested = raw.get(section, {})
        if not isinstance(nested, dict):
            found.append(f"'{prefix}{section}' must be a mapping, got {type(nested).__name__}")
            nested = {}
        nested = dict(nested)
        if key in nested:
            found.append(f"'{prefix}{old}' and '{prefix}{new}' are the same setting: keep '{prefix}{new}'")
        nested.setdefault(key, raw[old])
        del raw[old]
        raw[section] = nested
    return raw


def _convert(expected: Any, value: Any, dotted: str, found: List[str]) -> Any:
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise _BadValueError(f"'{dotted}' must be a mapping, got {type(value).__name__}")
        return _build(expected, value, f"{dotted}.", found)
    # typing.get_origin/get_args are 3.8+ (JetPack 4.6 has 3.6); for Optional[X] and List[X] the
    # dunders say the same on every version (List's origin is typing.List on 3.6, list later).
    origin = getattr(expected, "__origin__", None)
    if origin is Union:
        options = [arg for arg in getattr(expected, "__args__", ()) if arg is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, dotted, found)
    if origin in (list, typing.List):
        (item_type,) = getattr(expected, "__args__", ())
        if not isinstance(value, list):
            raise _BadValueError(f"'{dotted}' must be a list, got {type(value).__name__}")
        return [_convert(item_type, item, f"{dotted}[{i}]", found) for i, item in enumerate(value)]
    if expected is bool:
        if not isinstance(value, bool):
            raise _BadValueError(f"'{dotted}' must be true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadValueError(f"'{dotted}' must be an integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadValueError(f"'{dotted}' must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _BadValueError(f"'{dotted}' must be a finite number, got {value!r}")
        return number
    if expected is str:
        if not isinstance(value, str):
            raise _BadValueError(f"'{dotted}' must be a string, got {value!r}")
        return value
    raise _BadValueError(f"'{dotted}' has an unsupported type {expected!r}")  # pragma: no cover
