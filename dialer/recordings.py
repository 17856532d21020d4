"""Fetching a campaign's recordings (record steps) from its provider, with the account's credentials.

A recording's URL came in a callback, so it is fetched only from the provider's own hosts (or the
host its API is configured at, a simulator's): the credentials go nowhere else. Each file is
written beside its final name and renamed into place once whole, and a file already fetched is
not fetched again, so the command is safe to interrupt and to run twice.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlmodel import Session, col, select

from dialer.errors import ConfigurationError, ProviderError
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer
from dialer.providers import get_provider
from dialer.providers.base import Provider, send
from dialer.runtime import spec_of
from dialer.settings import Settings

_SUFFIXES = {"audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav"}


@dataclass
class Fetched:
    """What a fetch did: files written, files there already, recordings it could not fetch."""

    written: list[Path] = field(default_factory=list)
    present: int = 0
    failed: list[str] = field(default_factory=list)


def allowed(url: str, provider: Provider, settings: Settings) -> bool:
    """Whether ``url`` is on a host the provider's credentials may be sent to."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        return False
    own = urlsplit(settings.provider_settings(provider.name).base_url).hostname
    if host == own:
        return True
    return parts.scheme == "https" and any(
        host == domain or host.endswith(f".{domain}") for domain in provider.recording_hosts
    )


def fetch_recordings(
    session: Session, *, campaign: Campaign, settings: Settings, directory: Path, client: httpx.Client
) -> Fetched:
    """Download every recording of ``campaign`` into ``directory`` as ``<phone>-<attempt>-<step>``,
    each through the route (provider and account) its attempt was placed on."""
    rows = session.exec(
        select(DtmfAnswer, Contact.phone, Attempt.number, Attempt.provider)
        .join(Contact, col(Contact.id) == col(DtmfAnswer.contact_id))
        .join(Attempt, col(Attempt.id) == col(DtmfAnswer.attempt_id))
        .where(col(Contact.campaign_id) == campaign.id, col(DtmfAnswer.recording).is_not(None))
        .order_by(col(DtmfAnswer.id))
    ).all()
    routes = [get_provider(route) for route in (*spec_of(campaign).routes, *(row[3] for row in rows))]
    if all(provider.recording_request is None for provider in routes):
        raise ConfigurationError(f"{routes[0].title} keeps no recordings for us to fetch")
    if not directory.is_dir():
        raise ConfigurationError(f"{directory}: no such directory")
    done = Fetched()
    for answer, phone, number, route in rows:
        url = answer.recording or ""
        stem = f"{phone.lstrip('+')}-{number}-{answer.step}"
        if any(directory.glob(f"{stem}.*")):
            done.present += 1
            continue
        provider = get_provider(route)
        if not settings.has_route(route):
            done.failed.append(f"{stem}: placed through {route}, whose account is not set here: not fetched")
            continue
        if not allowed(url, provider, settings) or provider.recording_request is None:
            done.failed.append(f"{stem}: {url} is not one of {provider.title}'s hosts: not fetched")
            continue
        credentials = settings.provider_settings(route)
        try:
            response = send(client, provider.recording_request(url, credentials, None), provider=provider)
        except ProviderError as error:
            done.failed.append(f"{stem}: {error}")
            continue
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        path = directory / f"{stem}{_SUFFIXES.get(kind, '.mp3')}"
        handle, partial = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(response.content)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        done.written.append(path)
    return done
