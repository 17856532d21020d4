"""What campaign files are made of: durations, templates with ``{placeholders}``, and the error
that names the field at fault."""

from __future__ import annotations

import re
import string
from datetime import timedelta
from typing import Annotated, Any
from xml.sax.saxutils import escape as xml_escape

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class SpecError(ValueError):
    """A campaign file that cannot be used; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def parse_duration(value: Any) -> timedelta:
    """Read ``90``, ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"`` or ``"500ms"`` as a duration."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use seconds or a number with ms, s, m, h or d)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: d.total_seconds(), return_type=float),
]


class Model(BaseModel):
    """A part of a campaign file: unknown fields refused, values frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a message template takes from each contact's CSV columns."""
    names = set()
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None:
            if not field_name.isidentifier():
                raise ValueError(f"placeholder {{{field_name}}} must be a plain column name")
            names.add(field_name)
    return names


def render(template: str, variables: dict[str, str], *, ssml: bool = False) -> str:
    """Fill a template's placeholders from one contact's variables.

    In an SSML template each value is escaped (``&``, ``<``, ``>``), so a contact named
    ``Smith & Sons`` is spoken, not taken for markup that breaks the whole message.
    """
    if ssml:
        variables = {name: xml_escape(value) for name, value in variables.items()}
    return template.format_map(variables)
