"""Provider adapters, by name. Each module's ``PROVIDER`` is registered here."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from dialer.errors import ConfigurationError
from dialer.providers import cequens, cm, fractel, routee, vonage
from dialer.providers.base import Provider
from dialer.settings import ACCOUNT_NAME, ProviderAccount

PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (vonage.PROVIDER, cm.PROVIDER, routee.PROVIDER, cequens.PROVIDER, fractel.PROVIDER)
}


@cache
def get_provider(route: str) -> Provider:
    """The adapter of a route: a provider (``vonage``), or another account of it (``vonage.backup``:
    the same adapter under the route's name, which keys its settings, limits and callbacks)."""
    name, dot, account = route.partition(".")
    if name not in PROVIDERS:
        raise ConfigurationError(f"unknown provider {name!r} (known: {', '.join(sorted(PROVIDERS))})")
    if not dot:
        return PROVIDERS[name]
    if not ACCOUNT_NAME.fullmatch(account):
        raise ConfigurationError(
            f"route {route!r}: an account name is 1 to 12 lower-case letters, digits or _"
        )
    return replace(PROVIDERS[name], name=route)


def account_limit(provider: str, account: ProviderAccount) -> float:
    """The account's requests per second: as configured, else as the provider documents it."""
    return account.rate_limit or get_provider(provider).default_rate_limit
