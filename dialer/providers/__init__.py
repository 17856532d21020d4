"""Provider adapters, by name. Each module's ``PROVIDER`` is registered here."""

from __future__ import annotations

from dialer.errors import ConfigurationError
from dialer.providers import cequens, cm, fractel, routee, vonage
from dialer.providers.base import Provider
from dialer.settings import ProviderAccount

PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (vonage.PROVIDER, cm.PROVIDER, routee.PROVIDER, cequens.PROVIDER, fractel.PROVIDER)
}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown provider {name!r} (known: {', '.join(sorted(PROVIDERS))})"
        ) from None


def account_limit(provider: str, account: ProviderAccount) -> float:
    """The account's requests per second: as configured, else as the provider documents it."""
    return account.rate_limit or get_provider(provider).default_rate_limit
