"""How fast the receiver answers a key press with the call flow's next step, under load.

    python bench/steps.py [--seconds 10] [--rate 1000] [--step-rate 50] [--databases postgresql sqlite]

Every key pressed on a call now waits for the receiver's reply (the next question, an opt-out's
confirmation, a transfer), and Routee waits 3 seconds for it before it carries on without it. So:
``dialer serve`` on a fresh database, with calls of every provider in progress, takes their
callbacks at ``--rate`` a second (open loop, as bench/webhooks.py sends them), while calls of a
survey (the three-question flow of tests/e2e.py) press keys at ``--step-rate`` a second. Printed:
each load's answers a second, p50, p99 and worst latency from when each request was due, non-2xx
answers, and whether every key press was taken once (its answer kept, its call moved on one
segment). Goal (issue "What happens on the call"): the step answers' p99 <= 100 ms and the worst
< 1 s at 1,000 callbacks a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine
from bench.webhooks import Callback, Load, _calls, _database, _drive, _free_port, _server, build
from campaigns.spec import parse_campaign
from dialer import db
from dialer.settings import environment
from dialer.simulators import dev_credentials
from dialer.simulators.vonage import sign_webhook
from tests.e2e import survey_text


def _survey_calls(url: str, calls: int) -> list[tuple[str, str]]:
    """``calls`` answered calls of the survey in progress: (token, call id) of each."""
    spec = parse_campaign(survey_text("vonage").replace('name = "e2e"', 'name = "bench-survey"'))
    moment = datetime.now(UTC).replace(tzinfo=None)
    pairs = [(secrets.token_urlsafe(24), f"survey-{secrets.token_hex(8)}") for _ in range(calls)]
    with db.get_engine(url).begin() as connection:
        campaign = connection.execute(
            sa.text(
                "INSERT INTO campaign (name, provider, spec, status, created_at)"
                " VALUES ('bench-survey', 'vonage', :spec, 'running', :now) RETURNING id"
            ),
            {"spec": spec.model_dump_json(), "now": moment},
        ).scalar_one()
        for number, (token, call) in enumerate(pairs):
            contact = connection.execute(
                sa.text(
                    "INSERT INTO contact (campaign_id, phone, variables, row_number, state, attempts,"
                    " next_attempt_at, updated_at) VALUES (:campaign, :phone, :variables, :row, 'calling',"
                    " 1, :now, :now) RETURNING id"
                ),
                {
                    "campaign": campaign,
                    "phone": f"+1917{number:07d}",
                    "variables": json.dumps({"first_name": "Ada", "agent": "+12125550198"}),
                    "row": number + 2,
                    "now": moment,
                },
            ).scalar_one()
            connection.execute(
                sa.text(
                    "INSERT INTO attempt (campaign_id, contact_id, number, provider, status, callback_token,"
                    " provider_call_id, send_failures, queued_at, dispatched_at, answered_at, updated_at)"
                    " VALUES (:campaign, :contact, 1, 'vonage', 'answered', :token, :call, 0,"
                    " :now, :now, :now, :now)"
                ),
                {"campaign": campaign, "contact": contact, "token": token, "call": call, "now": moment},
            )
    return pairs


def _key_presses(pairs: list[tuple[str, str]], credentials: dict[str, dict[str, str]]) -> list[Callback]:
    """Each survey call's first answer, "2" (a poor visit: the reply asks what went wrong), signed."""
    secret, api_key = credentials["vonage"]["signature_secret"], credentials["vonage"]["api_key"]
    presses = []
    for token, call in pairs:
        body = json.dumps(
            {"dtmf": {"digits": "2", "timed_out": False}, "uuid": call, "conversation_uuid": f"CON-{call}"}
        ).encode()
        jwt = sign_webhook(body, secret=secret, api_key=api_key)
        path = f"/webhooks/vonage/{token}/input?step=rating&seq=0&try=1"
        presses.append(Callback("POST", path, (("Authorization", f"Bearer {jwt}"),), body, token))
    return presses


def _line(label: str, load: Load) -> str:
    ms = np.array(load.latencies or [0.0]) * 1000
    non_2xx = sum(1 for status in load.statuses if not 200 <= status < 300)
    return (
        f"{label:<44} {load.done / load.seconds:7.0f} /s  p50 {np.percentile(ms, 50):7.1f} ms  "
        f"p99 {np.percentile(ms, 99):7.1f} ms  worst {ms.max():7.1f} ms  non-2xx {non_2xx}"
    )


def _taken_once(url: str) -> tuple[int, int]:
    """Survey answers kept, and survey calls moved on exactly one segment."""
    with db.get_engine(url).connect() as connection:
        answers = connection.execute(
            sa.text("SELECT count(*) FROM dtmfanswer WHERE step = 'rating'")
        ).scalar_one()
        moved = connection.execute(
            sa.text("SELECT count(*) FROM attempt WHERE provider_call_id LIKE 'survey-%' AND step_seq = 1")
        ).scalar_one()
    return int(answers), int(moved)


async def _together(
    port: int,
    background: list[Callback],
    presses: list[Callback],
    *,
    seconds: float,
    rate: float,
    step_rate: float,
) -> tuple[Load, Load]:
    loads = await asyncio.gather(
        _drive(port, background, connections=64, seconds=seconds, rate=rate),
        _drive(port, presses, connections=16, seconds=seconds, rate=step_rate),
    )
    return loads[0], loads[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="other callbacks a second, offered")
    parser.add_argument("--step-rate", type=float, default=50.0, help="key presses a second, offered")
    parser.add_argument("--calls", type=int, default=2500, help="calls in progress per provider")
    parser.add_argument("--databases", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--serve-workers", type=int, default=2)
    args = parser.parse_args()
    print(machine())
    credentials = dev_credentials()
    env = environment(credentials)
    port = _free_port()
    serve = [
        sys.executable,
        "-m",
        "dialer",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(args.serve_workers),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.databases:
            with _database(name, scratch) as url:
                background = build(_calls(url, args.calls), credentials)
                presses = _key_presses(
                    _survey_calls(url, int(args.step_rate * args.seconds) + 50), credentials
                )
                with _server(serve, port, env | {"DIALER_DATABASE_URL": url}):
                    other, steps = asyncio.run(
                        _together(
                            port,
                            background,
                            presses,
                            seconds=args.seconds,
                            rate=args.rate,
                            step_rate=args.step_rate,
                        )
                    )
                answers, moved = _taken_once(url)
                print(_line(f"{name}: other callbacks at {args.rate:g}/s offered", other))
                print(_line(f"{name}: key presses at {args.step_rate:g}/s offered", steps))
                taken = f"answers kept {answers}, calls moved on {moved}"
                print(f"{name}: key presses answered {steps.done}, {taken}")


if __name__ == "__main__":
    main()
