"""How the schema states its rules, and the one checker that reads them.

A field's rules sit on the field (`setting(default, *checks)` puts them in its metadata); rules
that relate fields of one section are that section's `RULES`. `problems()` walks a config and
returns every broken rule, each naming its dotted key, so a bad file is reported whole."""


import dataclasses
from typing import Any, Callable, List, NamedTuple

from edge.config.rules import one_of


class Check(NamedTuple):
    """A rule on one value; `rule` completes "'key' ...", e.g. "must be between 0 and 1"."""

    ok: Callable[[Any], bool]
    rule: str


class Rule(NamedTuple):
    """A rule between fields of one section, reported under `key` (a field of that section)."""

    key: str
    ok: Callable[[Any], bool]  # takes the section
    rule: str


def setting(default: Any, *checks: Check) -> Any:
    """A schema field with its rules; a list default is copied for each instance."""
    metadata = {"checks": checks}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _number(value: float) -> str:
    return f"{value:g}"


def between(low: float, high: float, note: str = "") -> Check:
    """low <= value <= high; `note` says what the low end means (e.g. "no check")."""
    low_text = f"{_number(low)} ({note})" if note else _number(low)
    return Check(lambda value: low <= value <= high, f"must be between {low_text} and {_number(high)}")


def at_least(low: float, note: str = "") -> Check:
    if low == 0:
        return Check(lambda value: value >= 0, f"must be 0 ({note}) or more" if note else "must be 0 or more")
    return Check(lambda value: value >= low, f"must be at least {_number(low)}")


def at_most(high: float, why: str = "") -> Check:
    return Check(lambda value: value <= high, f"must be at most {_number(high)}" + (f" ({why})" if why else ""))


def above(low: float) -> Check:
    return Check(lambda value: value > low, f"must be above {_number(low)}")


def member(names: tuple) -> Check:
    return Check(lambda value: value in names, "must be " + one_of(names))


def problems(section: Any, prefix: str = "") -> List[str]:
    """Every broken rule in a config (or one section of it), as "'dotted.key' must ..." texts."""
    found: List[str] = []
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        key = prefix + field.name
        broken = next((check for check in field.metadata.get("checks", ()) if not check.ok(value)), None)
        if broken is not None:  # the first broken rule of a field says enough
            found.append(f"'{key}' {broken.rule}")
        if dataclasses.is_dataclass(value):
            found += problems(value, key + ".")
        elif isinstance(value, list) and any(dataclasses.is_dataclass(item) for item in value):
            for item in value:  # a list of sections (cameras): reported once per key, not per item
                found += [text for text in problems(item, key + "[].") if text not in found]
    for rule in getattr(type(section), "RULES", ()):
        if not rule.ok(section):
            found.append(f"'{prefix}{rule.key}' {rule.rule}")
    return found
