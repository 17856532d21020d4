"""Settings from the environment (prefix ``DIALER_``, nested with ``__``) or a ``.env`` file.

Secrets are ``SecretStr``: never logged, never written to the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dialer.errors import ConfigurationError

ACCOUNT_NAME = re.compile(r"[a-z0-9_]{1,12}")
"""The name of a provider's further account: a route through it is ``provider.name``."""


class ProviderAccount(BaseModel):
    """What every provider account has: its API host, its rate limit and its concurrent-call cap."""

    base_url: str
    rate_limit: float | None = Field(
        None, gt=0, description="requests per second allowed on the account (None: the documented limit)"
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="calls in progress at once on the account, every campaign together"
    )
    answer_timeout: float | None = Field(
        None, gt=0, description="seconds a create-call request may take (None: DIALER_HTTP_TIMEOUT)"
    )
    accounts: dict[str, Self] = Field(
        default_factory=dict,
        description="other accounts of the provider, by name (DIALER_VONAGE__ACCOUNTS__BACKUP__...): a"
        " campaign routes through one as `vonage.backup`, with its own credentials and limits",
    )
    credential: ClassVar[str] = ""
    """The secret without which the account is not configured (``dialer doctor`` tries those that are)."""

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, accounts: dict[str, Self]) -> dict[str, Self]:
        for name, account in accounts.items():
            if not ACCOUNT_NAME.fullmatch(name):
                raise ValueError(f"account name {name!r}: 1 to 12 lower-case letters, digits or _")
            if account.accounts:
                raise ValueError(f"account {name!r} has accounts of its own: give them beside it")
        return accounts

    @property
    def configured(self) -> bool:
        return getattr(self, self.credential, None) is not None


class VonageSettings(ProviderAccount):
    """Vonage Voice API: an application id with its RSA private key, and the signature secret."""

    credential = "private_key"
    base_url: str = "https://api.nexmo.com"
    application_id: str = Field("", description="the Vonage application's id (its key signs each request)")
    private_key: SecretStr | None = Field(None, description="PEM text, or the path of a PEM file")
    api_key: str | None = Field(None, description="the account whose signature secret verifies callbacks")
    signature_secret: SecretStr | None = None
    require_signature: bool = Field(
        False, description="refuse (with a 503, so Vonage retries) callbacks that are not signed"
    )

    def private_key_pem(self) -> str | None:
        """The key's PEM text, read from the file the setting names unless it is the text itself."""
        if self.private_key is None:
            return None
        value = self.private_key.get_secret_value()
        if value.lstrip().startswith("-----BEGIN"):
            return value
        if "\n" in value or len(value) > 4096:
            raise ConfigurationError(
                "DIALER_VONAGE__PRIVATE_KEY is neither PEM text (from -----BEGIN to -----END) nor a file path"
            )
        try:
            return Path(value).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as error:
            # The value may be a mangled key rather than a path: never repeat it.
            raise ConfigurationError(
                f"DIALER_VONAGE__PRIVATE_KEY names a file that cannot be read: {error.__class__.__name__}"
                f" ({getattr(error, 'strerror', None) or 'not a PEM text file'})"
            ) from None


class CmSettings(ProviderAccount):
    """CM.com Voice API: a product token (a GUID) sent as a header."""

    credential = "product_token"
    base_url: str = "https://api.cm.com"
    product_token: SecretStr | None = None


class RouteeSettings(ProviderAccount):
    """Routee: OAuth2 client credentials (application id and secret) for a bearer token."""

    credential = "application_secret"
    base_url: str = "https://connect.routee.net"
    auth_url: str = "https://auth.routee.net"
    application_id: str = ""
    application_secret: SecretStr | None = None
    collected_tones: Literal["since_last_post", "whole_call"] = Field(
        "since_last_post",
        description="what a COLLECT post carries: the tones since the previous post, or all the call's",
    )


class CequensSettings(ProviderAccount):
    """Cequens: an API key and user name signed in for a bearer token."""

    credential = "api_key"
    base_url: str = "https://apis.cequens.com"
    call_path: str = Field("/voice/v1/calls", description="not in the public documents; see the adapter")
    call_id_field: str | None = Field(
        None, description="where the create-call answer has the call id (data.callId)"
    )
    callback_id_field: str | None = Field(None, description="where callbacks name their call (callId)")
    status_field: str | None = Field(None, description="where a status callback has the status (status)")
    digits_field: str | None = Field(
        None, description="the DTMF callback's query parameter of the keys (digits)"
    )
    api_key: SecretStr | None = None
    user_name: str = ""


class FractelSettings(ProviderAccount):
    """Fractel FoneStorm: a user name and password signed in for a token; callbacks use HTTP Basic."""

    credential = "password"
    base_url: str = "https://api.fonestorm.com"
    username: str = ""
    password: SecretStr | None = None
    webhook_username: str = "dialer"
    webhook_password: SecretStr | None = None
    answer_timeout: float | None = Field(
        90.0, gt=0, description="seconds to wait for a create-call answer, which comes when the call connects"
    )


class Settings(BaseSettings):
    """Everything the dialer reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="DIALER_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    database_url: str = "sqlite:///dialer.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    public_url: str = Field("http://127.0.0.1:8000", description="the base URL providers call back")
    http_timeout: float = Field(10.0, gt=0, description="seconds to wait for a provider's answer")
    pacing_margin: float = Field(
        0.01,
        ge=0,
        le=0.5,
        description="share of each second the spacing of requests leaves unused (the limit itself "
        "is held by permits, however late requests travel)",
    )
    pacing_transit: float = Field(
        0.05,
        ge=0,
        le=10,
        description="seconds a request may take to reach the provider: the limit holds for any delay "
        "up to this (or up to the provider's answer, if that comes sooner)",
    )
    webhook_max_body: int = Field(
        64 * 1024, ge=1024, description="bytes a callback may have (a provider's are a few KB); more gets 413"
    )
    webhook_grace: float = Field(
        3600.0, gt=0, description="seconds after its attempt ended that a callback token is still taken"
    )
    webhook_max_head: int = Field(
        16 * 1024, ge=1024, description="bytes a request's line and headers may have; more gets 431"
    )
    webhook_head_timeout: float = Field(
        10.0, gt=0, description="seconds a request's head may take to arrive; slower, the connection closes"
    )
    webhook_body_timeout: float = Field(
        10.0, gt=0, description="seconds a running request's body may take to arrive; slower gets 408"
    )
    webhook_max_connections: int = Field(
        2000, ge=16, description="connections the receiver holds at once; a request beyond gets 503"
    )
    number_cap: int | None = Field(
        None,
        ge=1,
        description="at most this many calls to one number, whatever campaign places them, in"
        " DIALER_NUMBER_CAP_DAYS (None: no cap)",
    )
    number_cap_days: float = Field(7.0, gt=0, description="the days over which DIALER_NUMBER_CAP counts")
    notify_secret: SecretStr | None = Field(
        None, description="signs the results pushed to a campaign's [notify] URL (HMAC-SHA256)"
    )
    notify_timeout: float = Field(10.0, gt=0, description="seconds a [notify] URL may take to answer")
    notify_first_retry: float = Field(
        10.0, gt=0, description="seconds before a failed result push is tried again (doubling, up to an hour)"
    )
    route_failures: int = Field(
        10,
        ge=1,
        description="requests to a provider failing in a row (5xx, no answer) before its campaigns"
        " move to their next route",
    )
    route_retry: float = Field(
        300.0,
        gt=0,
        description="seconds before a campaign moved off its first route by failures tries it again",
    )
    db_outage_limit: float = Field(
        300.0,
        gt=0,
        description="seconds `dialer run` rides out a database that does not answer before it stops calling"
        " and exits",
    )
    tick_seconds: float = Field(1.0, gt=0, description="how often the scheduler claims due contacts")
    sweep_seconds: float = Field(10.0, gt=0, description="how often stalled attempts are checked")
    requeue_after: float = Field(30.0, gt=0, description="seconds before a queued attempt is enqueued again")
    settle_after: float = Field(
        600.0, gt=0, description="seconds without news before an attempt is looked up"
    )
    give_up_after: float | None = Field(
        None,
        gt=0,
        description="seconds after dispatch before an attempt with no result ends unknown (None: the"
        " ring, the campaign's longest call and the provider's callback delay)",
    )
    vonage: VonageSettings = VonageSettings()
    cm: CmSettings = CmSettings()
    routee: RouteeSettings = RouteeSettings()
    cequens: CequensSettings = CequensSettings()
    fractel: FractelSettings = FractelSettings()

    def has_route(self, route: str) -> bool:
        """Whether the account of a route is set (a provider's own always is)."""
        provider, _, name = route.partition(".")
        return not name or name in self.provider_settings(provider).accounts

    def provider_settings(self, route: str) -> ProviderAccount:
        """The account of a route: a provider's own (``vonage``) or another of its accounts
        (``vonage.backup``)."""
        provider, _, name = route.partition(".")
        settings: ProviderAccount = getattr(self, provider)
        if not name:
            return settings
        try:
            return settings.accounts[name]
        except KeyError:
            raise ConfigurationError(
                f"route {route!r}: no {provider} account {name!r} is set"
                f" (give DIALER_{provider.upper()}__ACCOUNTS__{name.upper()}__... as for {provider} itself)"
            ) from None

    def routes(self, providers: Iterable[str]) -> list[str]:
        """Every route of ``providers``: each provider's own account, then its other accounts."""
        return [
            route
            for provider in providers
            for route in (
                provider,
                *(f"{provider}.{name}" for name in self.provider_settings(provider).accounts),
            )
        ]


def environment(values: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Nested settings values (``{"vonage": {"api_key": ...}}``, a route's account as
    ``{"vonage.backup": {...}}``) as the ``DIALER_*`` variables that set them."""
    return {
        f"DIALER_{'__ACCOUNTS__'.join(part.upper().split('.'))}__{key.upper()}": str(value)
        for part, fields in values.items()
        for key, value in fields.items()
    }


@cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
