"""What a callback may carry, checked at the edge.

Each provider's callbacks are read into a pydantic model made of these fields, so a value that
cannot be right (a price of ``"abc"``, a negative or non-numeric duration, ten thousand digits, a
NUL) is refused with its reason, a 400, and never stored. The bounds are the database's and the
report's: a price fits ``NUMERIC(18, 8)``, a call id its 100-character column, an answer 64 keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from dialer.errors import WebhookPayloadError

MAX_CALL_SECONDS = 86_400
"""No call lasts longer than a day (Vonage's ``length_timer`` at most)."""


def _whole_seconds(value: Any) -> Any:
    """A number of seconds as providers write it (``60``, ``"60"``, ``12.4``), rounded."""
    if isinstance(value, bool):
        return value  # refused below: a duration is not true or false
    if isinstance(value, str):
        try:
            return round(float(value))
        except ValueError:
            return value
    if isinstance(value, float):
        return round(value) if value == value else value
    return value


CallId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,100}$")]
"""A provider's call id: printable, at most 100 characters."""
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9*#]{0,64}$")]
"""DTMF keys: at most 64 of 0-9, ``*`` and ``#``."""
Note = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]
"""A provider's words about a call (a reason, a description)."""
Name = Annotated[str, StringConstraints(max_length=40, pattern=r"^[\x20-\x7e]*$")]
"""A short keyword (a status, a sub-state, a type)."""
Seconds = Annotated[int, BeforeValidator(_whole_seconds), Field(ge=0, le=MAX_CALL_SECONDS, strict=True)]
"""A call's duration in whole seconds."""
Price = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=8)]
"""A call's price in the provider's currency, as the report sums it (``NUMERIC(18, 8)``)."""


class Callback(BaseModel):
    """A provider callback's body: unknown fields are ignored, known ones checked."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


M = TypeVar("M", bound=Callback)


def read(model: type[M], data: bytes | Mapping[str, Any], *, what: str) -> M:
    """``data`` (a JSON body, or form or query fields) as ``model``; a :class:`WebhookPayloadError`
    naming the first field that is not what ``what`` carries."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(dict(data))
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise WebhookPayloadError(f"{what}: {where}: {first['msg']}") from None


def price_text(price: Decimal | None) -> str | None:
    """A price as stored: its digits as the provider wrote them, never in exponent form."""
    return None if price is None else format(price, "f")
