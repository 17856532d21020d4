"""Several accounts of one provider: each a route of its own (``vonage.backup``), with its own
credentials and limits, named in a campaign's routes like a provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from dialer import db
from dialer.cli import main
from dialer.errors import ConfigurationError
from dialer.operations import get_campaign
from dialer.providers import PROVIDERS, account_limit, get_provider
from dialer.runner import OFFLINE_URL, simulated
from dialer.runtime import spec_of
from dialer.scheduler import pump
from dialer.settings import Settings, environment, get_settings
from tests.dialer.factories import FakeVonage, campaign_with_contacts, runtime
from tests.e2e import campaign_text

BACKUP = {"vonage.backup": {"application_id": "backup-app", "rate_limit": "1.5"}}


def test_another_account_is_a_route_with_its_own_settings_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment(BACKUP).items():
        monkeypatch.setenv(name, value)
    assert environment(BACKUP) == {
        "DIALER_VONAGE__ACCOUNTS__BACKUP__APPLICATION_ID": "backup-app",
        "DIALER_VONAGE__ACCOUNTS__BACKUP__RATE_LIMIT": "1.5",
    }
    settings = Settings()
    assert settings.routes(PROVIDERS)[:2] == ["vonage", "vonage.backup"]
    account = settings.provider_settings("vonage.backup")
    assert (account.application_id, account_limit("vonage.backup", account)) == ("backup-app", 1.5)  # type: ignore[attr-defined]
    assert (
        account_limit("vonage", settings.provider_settings("vonage"))
        == PROVIDERS["vonage"].default_rate_limit
    )
    provider = get_provider("vonage.backup")
    assert (provider.name, provider.title, provider.build_call) == (
        "vonage.backup",
        "Vonage",
        PROVIDERS["vonage"].build_call,
    )


def test_a_route_to_an_account_not_set_or_badly_named_is_refused_saying_which() -> None:
    with pytest.raises(ConfigurationError, match=r"route 'vonage.nope': no vonage account 'nope' is set"):
        Settings().provider_settings("vonage.nope")
    with pytest.raises(ConfigurationError, match="an account name is 1 to 12 lower-case"):
        get_provider("vonage.Bad-Name")
    with pytest.raises(ConfigurationError, match="unknown provider 'twilio'"):
        get_provider("twilio.main")
    with pytest.raises(ValidationError, match="account name 'bad-name'"):
        Settings(vonage={"accounts": {"bad-name": {}}})


def test_campaign_create_refuses_a_fallback_through_an_account_not_set(
    sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "campaign.toml"
    path.write_text(
        campaign_text("vonage").replace(
            'provider = "vonage"', 'provider = "vonage"\nfallback = ["vonage.backup"]'
        )
    )
    env = {"DIALER_DATABASE_URL": sqlite_url}
    refused = CliRunner().invoke(main, ["campaign", "create", str(path)], env=env)
    assert refused.exit_code == 1
    assert "fallback[0]: route 'vonage.backup': no vonage account 'backup' is set" in refused.output
    get_settings.cache_clear()  # read the environment again, as a new command would
    created = CliRunner().invoke(main, ["campaign", "create", str(path)], env=env | environment(BACKUP))
    assert created.exit_code == 0, created.output


def test_a_simulated_run_points_every_other_route_nowhere() -> None:
    settings = Settings(
        vonage={"accounts": {"backup": {"application_id": "backup-app"}}},
        routee={"accounts": {"spare": {"application_id": "spare-app"}}},
    )
    simulating = simulated(
        settings, "vonage.backup", simulator_url="http://127.0.0.1:7001", public_url="http://127.0.0.1:7002"
    )
    assert simulating.provider_settings("vonage.backup").base_url == "http://127.0.0.1:7001"
    others = [route for route in simulating.routes(PROVIDERS) if route != "vonage.backup"]
    # Every route the operator set is still a route (a campaign naming one can be simulated).
    assert others == ["vonage", "cm", "routee", "routee.spare", "cequens", "fractel"]
    assert {simulating.provider_settings(route).base_url for route in others} == {OFFLINE_URL}
    own = simulated(
        settings, "vonage", simulator_url="http://127.0.0.1:7001", public_url="http://127.0.0.1:7002"
    )
    assert own.provider_settings("vonage").base_url == "http://127.0.0.1:7001"
    assert own.provider_settings("vonage.backup").base_url == OFFLINE_URL  # kept, pointing nowhere


def test_a_campaign_switches_to_another_account_by_its_route(sqlite_url: str, tmp_path: Path) -> None:
    """Even to its fallback route, which then is its first (a route named twice is refused)."""
    path = tmp_path / "campaign.toml"
    path.write_text(
        campaign_text("vonage").replace(
            'provider = "vonage"', 'provider = "vonage"\nfallback = ["vonage.backup"]'
        )
    )
    env = {"DIALER_DATABASE_URL": sqlite_url} | environment(BACKUP)
    invoke = CliRunner().invoke
    assert invoke(main, ["campaign", "create", str(path)], env=env).exit_code == 0
    unknown = invoke(main, ["campaign", "provider", "e2e", "vonage.nope"], env=env)
    assert unknown.exit_code == 1
    assert "route 'vonage.nope': no vonage account 'nope' is set" in unknown.output
    switched = invoke(main, ["campaign", "provider", "e2e", "vonage.backup"], env=env)
    assert switched.output == "campaign e2e now calls through vonage.backup\n"
    status = invoke(main, ["status", "e2e"], env=env)
    assert status.exit_code == 0 and "vonage.backup" in status.output
    with db.session_scope(sqlite_url) as session:
        campaign = get_campaign(session, "e2e")
        assert (campaign.provider, spec_of(campaign).routes) == ("vonage.backup", ("vonage.backup",))


def test_a_campaign_on_an_account_not_set_here_is_paused_and_the_others_are_called(
    settings: Settings,
) -> None:
    """Beat or workers started without an account the campaign names: that campaign stops, saying
    why, and every other campaign goes on (the pump used to stop at it)."""
    url = settings.database_url
    text = campaign_text("vonage").replace('provider = "vonage"', 'provider = "vonage.backup"')
    campaign_with_contacts(url, ["+12125550106"], name="backup", text=text)
    campaign_with_contacts(url, ["+12125550107"])
    enqueued: list[tuple[int, float]] = []
    assert pump(runtime(settings, FakeVonage(), enqueued)) == 1
    with db.session_scope(url) as session:
        stopped, going = get_campaign(session, "backup"), get_campaign(session, "e2e")
        assert (stopped.status, going.status) == ("paused", "running")
        assert stopped.reason is not None and "no vonage account 'backup' is set" in stopped.reason
