"""The README's "Running campaigns" commands, run as written, in a directory laid out as a checkout."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def section_commands(title: str) -> list[str]:
    """The shell commands of the first ``sh`` block under the README heading ``title``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"no sh block under {title!r}"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.timeout(240)
def test_the_running_campaigns_commands_run_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "dialer" / "examples", tmp_path / "dialer" / "examples")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIALER_")}
    env["DIALER_DATABASE_URL"] = "sqlite:///dialer.db"  # the default, relative to the checkout
    commands = section_commands("Running campaigns")
    assert commands[0] == "dialer db upgrade" and any(c.startswith("dialer run ") for c in commands)
    for command in commands:
        argv = shlex.split(command)
        if argv[:2] != ["dialer", "run"]:
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            continue
        # `dialer run` goes on until the campaign completes (its retries wait 30 minutes):
        # let it call for a while, then Ctrl-C it as the comment beside it says.
        running = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        time.sleep(6)
        running.send_signal(signal.SIGINT)
        output, _ = running.communicate(timeout=120)
        assert running.returncode == 0, output
        assert "campaign appointment-reminders-vonage is paused" in output
        assert "`dialer run appointment-reminders-vonage --simulate` resumes it" in output  # as given

    rejects = pd.read_csv(tmp_path / "rejects.csv")
    assert len(rejects) == 2
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 60 and set(results["first_name"]) >= {"Ada", "Ben"}
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")


@pytest.mark.timeout(120)
def test_the_call_flow_commands_run_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "dialer" / "examples", tmp_path / "dialer" / "examples")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIALER_")}
    outputs = []
    for command in section_commands("Call flows"):
        done = subprocess.run(
            shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout)
    tried, called = outputs[-2], outputs[-1].splitlines()
    assert "  [answer kept: rating = poor]" in tried and "  [answer kept: problem = cost]" in tried
    assert any(line.startswith("call ") and ": completed, " in line for line in called)
    assert "  rating = poor" in called and "  problem = cost" in called and "  recommend = yes" in called
