"""The Chaos Toolkit extension through the `chaos` command: discovery, python/examples/experiment.json
against the lab (green), and runs interrupted by SIGKILL and by Ctrl-C leaving no fault."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from lab import Lab, TcpServer, wait_for

import faultd_client as fc

CHAOS = str(Path(sys.executable).with_name("chaos"))
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "experiment.json"
SERVICE_PORT = 7401


@pytest.fixture
def env(lab: Lab, tmp_path: Path) -> Dict[str, str]:
    probe = (f"ip netns exec {lab.a.netns} timeout 1 bash -c "
             f"'exec 3<>/dev/tcp/{lab.b.addr}/{SERVICE_PORT}'")
    return dict(os.environ, FAULTLINE_DEV=lab.a.dev, FAULTLINE_NETNS=lab.a.netns,
                FAULTLINE_PEER=lab.b.addr, SERVICE_PROBE=probe, PYTHONDONTWRITEBYTECODE="1")


@pytest.fixture
def service(lab: Lab) -> Iterator[None]:
    with TcpServer(lab.b, SERVICE_PORT):
        yield


def chaos(args: List[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([CHAOS, "--log-file", str(cwd / "chaos.log"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_discover_lists_the_activities_with_their_types(tmp_path: Path,
                                                        env: Dict[str, str]) -> None:
    out = chaos(["discover", "--no-install", "faultd-client"], tmp_path, env)
    assert out.returncode == 0, out.stdout + out.stderr
    discovery = json.loads((tmp_path / "discovery.json").read_text())
    assert discovery["extension"] == {"name": "faultd-client", "version": fc.__version__}
    assert discovery["system"]["faultd"]["agent"] == "faultd"
    found = {(a["type"], a["name"]): a for a in discovery["activities"]}
    assert set(found) == {("action", n) for n in ("partition", "loss", "delay", "apply",
                                                   "revoke", "renew", "clear")} | \
        {("probe", n) for n in ("faultd_status", "fault_active", "dropped_packets", "plan")}
    loss = found[("action", "loss")]
    assert loss["mod"] == "faultd_client.chaos.actions" and loss["return_type"] == "mapping"
    types = {a["name"]: a.get("type") for a in loss["arguments"]}
    assert types["dev"] == "string" and types["percent"] == "number"
    assert "configuration" not in types  # given by Chaos Toolkit, not by the experiment
    assert found[("probe", "fault_active")]["return_type"] == "boolean"
    assert found[("probe", "dropped_packets")]["return_type"] == "integer"
    assert found[("action", "clear")]["arguments"] == [
        {"name": "everything", "default": False, "type": "boolean"}]


def test_the_example_experiment_runs_green(tmp_path: Path, env: Dict[str, str], service: None,
                                           client: fc.Client) -> None:
    out = chaos(["run", "--journal-path", str(tmp_path / "journal.json"), str(EXAMPLE)],
                tmp_path, env)
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert out.returncode == 0, out.stdout + out.stderr + (tmp_path / "chaos.log").read_text()
    assert (journal["status"], journal["deviated"]) == ("completed", False)
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    cut = runs["partition-from-peer"]["output"]
    assert cut["state"] == "active" and cut["lease"] == "connection"
    assert cut["key"].startswith("chaos-") and cut["key"].endswith("/cut")
    assert runs["service-while-cut"]["output"]["status"] != 0  # the probe failed under it
    assert runs["partition-active"]["output"] is True
    assert runs["packets-dropped"]["output"] > 0
    healed = runs["heal"]["output"]
    assert healed["state"] == "revoked" and healed["id"] == cut["id"]
    final = healed["counters"]
    dropped = final["egress"]["dropped_packets"] + final["ingress"]["dropped_packets"]
    assert dropped >= runs["packets-dropped"]["output"]  # both directions, as the probe counts
    assert all(p["tolerance_met"] for p in journal["steady_states"]["after"]["probes"])
    assert client.list() == []


def holding_experiment(lab: Lab) -> Dict[str, Any]:
    """A dry run, then a 60 s partition held by a 60 s pause: only an interruption ends it."""
    target = {"dev": lab.a.dev, "netns": lab.a.netns, "match": {"dst": [lab.b.addr]}}
    python = {"type": "python", "module": "faultd_client.chaos.actions"}
    return {
        "title": "held until interrupted", "description": "interrupted by the test",
        "controls": [{"name": "faultd-cleanup",
                      "provider": {"type": "python", "module": "faultd_client.chaos.control"}}],
        "method": [
            {"type": "probe", "name": "plan", "provider": {
                "type": "python", "module": "faultd_client.chaos.probes", "func": "plan",
                "arguments": {"fault": {"target": target, "partition": {}, "duration": "60s"}}}},
            {"type": "action", "name": "hold", "pauses": {"after": 60},
             "provider": dict(python, func="apply", arguments={
                 "fault": {"target": target, "partition": {}, "duration": "60s"},
                 "name": "held"})},
        ],
    }


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_an_interrupted_run_leaves_no_fault(how: signal.Signals, lab: Lab, tmp_path: Path,
                                            env: Dict[str, str], client: fc.Client) -> None:
    experiment = tmp_path / "hold.json"
    experiment.write_text(json.dumps(holding_experiment(lab)))
    run = subprocess.Popen([CHAOS, "--log-file", str(tmp_path / "chaos.log"), "run",
                            "--journal-path", str(tmp_path / "journal.json"), str(experiment)],
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(client.list()) == 1, timeout=60), \
            (tmp_path / "chaos.log").read_text()
        run.send_signal(how)
        if how == signal.SIGKILL:
            run.wait()
            # Nothing of the run's ran: the lease ended the fault as the process's socket closed.
            assert wait_for(lambda: client.list() == [], timeout=1.0), client.list()
        else:
            # Chaos Toolkit's own interruption: its control revoked the run's faults by key.
            assert run.wait(timeout=30) is not None
            assert client.list() == []
            assert "faultd-client: revoked f" in (tmp_path / "chaos.log").read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
