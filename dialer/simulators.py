"""The provider simulators by name, and throwaway credentials for running them locally."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette

from dialer.errors import ConfigurationError
from dialer.providers import (
    account_limit,
    cequens_sim,
    cm_sim,
    fractel_sim,
    get_provider,
    routee_sim,
    vonage_sim,
)
from dialer.providers.simulation import Simulation
from dialer.settings import Settings

_FACTORIES: dict[str, Callable[[Simulation, Any], Starlette]] = {
    "vonage": vonage_sim.create_app,
    "cm": cm_sim.create_app,
    "routee": routee_sim.create_app,
    "cequens": cequens_sim.create_app,
    "fractel": fractel_sim.create_app,
}


def simulator_app(
    provider: str, settings: Settings, *, rate_limit: float | None = None, time_scale: float = 0.1
) -> Starlette:
    """A simulator for ``provider`` that accepts the credentials in ``settings``."""
    get_provider(provider)
    factory = _FACTORIES.get(provider)
    if factory is None:
        raise ConfigurationError(f"no simulator for {provider!r} yet")
    credentials = settings.provider_settings(provider)
    limit = rate_limit or account_limit(provider, credentials)
    try:
        return factory(Simulation(provider=provider, rate_limit=limit, time_scale=time_scale), credentials)
    except ValueError as error:
        raise ConfigurationError(f"the {provider} simulator cannot start: {error}") from None


def simulator_urls(provider: str, url: str) -> dict[str, str]:
    """The settings that point ``provider`` at its simulator at ``url`` (Routee's token host too)."""
    urls = {"base_url": url}
    if provider == "routee":
        urls["auth_url"] = url  # the simulator also plays Routee's separate OAuth2 host
    return urls


def dev_credentials() -> dict[str, dict[str, str]]:
    """Fresh local-only credentials for every provider, as nested settings values."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "vonage": {"private_key": pem, "signature_secret": secrets.token_hex(32)},
        "cm": {"product_token": str(uuid.uuid4())},
        "routee": {"application_id": secrets.token_hex(12), "application_secret": secrets.token_urlsafe(24)},
        "cequens": {"api_key": secrets.token_urlsafe(32), "user_name": "dialer"},
        "fractel": {
            "username": "dialer",
            "password": secrets.token_urlsafe(16),
            "webhook_password": secrets.token_urlsafe(16),
        },
    }
