"""Provider adapters, by name. Each module's ``PROVIDER`` is registered here."""

from __future__ import annotations

from dialer.errors import ConfigurationError
from dialer.providers import cequens, cm, fractel, routee, vonage
from dialer.providers.base import Provider

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
