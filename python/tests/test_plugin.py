"""The pytest plugin as a user meets it: the issue's two tests, verbatim, in a fresh project run by
pytest in a subprocess (the plugin loaded by its entry point), the target given through the
environment. The project's conftest probes the network from the plugin's hook while each fault
holds, so the tests' `pass` bodies are proven by traffic counted on the far side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from lab import Lab, wait_for, within_binomial

import faultd_client as fc

HELPERS = os.path.dirname(__file__)

#: The issue's tests, as given (the imports come first, from the project's helper module).
VERBATIM = '''
from chaos_helpers import RecoveryTimer, inject_failure, perform_recovery


def test_example(network_fault_injector):
    with network_fault_injector.inject_disconnect(duration_s=5.0):
        pass  # the network is down for 5 seconds
    with network_fault_injector.inject_latency(latency_ms=500):
        pass  # operations delayed by 500 ms
    with network_fault_injector.inject_packet_loss(loss_probability=0.20):
        pass  # 20 % of packets dropped

def test_rto(recovery_timer):
    timer = RecoveryTimer()
    with timer:
        inject_failure(); timer.mark_detected()
        timer.mark_recovery_started(); perform_recovery(); timer.mark_recovery_completed()
    assert timer.metrics.meets_rto  # <= 30 s
'''

#: The user's project: probes while each fault holds, written to $PROBES as JSON lines.
CONFTEST = '''
import json, os, sys
sys.path.insert(0, os.environ["FAULTD_TEST_HELPERS"])
from lab import Lab, TcpServer, tcp_connect_seconds, tcp_connects, udp_burst

LAB = Lab.from_env()


def record(**fields):
    with open(os.environ["PROBES"], "a") as out:
        out.write(json.dumps(fields) + "\\n")


def pytest_faultd_fault_applied(fault, item):
    if fault.kind == "partition":
        with TcpServer(LAB.b, 7301), TcpServer(LAB.a, 7302):
            a_to_b = tcp_connects(LAB.a, LAB.b.addr, 7301, 0.5)
            b_to_a = tcp_connects(LAB.b, LAB.a.addr, 7302, 0.5)
        sent, received = udp_burst(LAB.a, LAB.b, 7303, 100)
    elif fault.kind == "latency":
        # a's SYN waits out the delay on a's egress; b's SYN/ACK does not.
        with TcpServer(LAB.b, 7305):
            connect_s = tcp_connect_seconds(LAB.a, LAB.b.addr, 7305, 5.0)
        record(event="applied", id=fault.id, kind=fault.kind, connect_s=connect_s)
        return
    else:
        a_to_b = b_to_a = None
        sent, received = udp_burst(LAB.a, LAB.b, 7304, 2000)
    record(event="applied", id=fault.id, kind=fault.kind, tcp_a_to_b=a_to_b,
           tcp_b_to_a=b_to_a, udp_sent=sent, udp_received=received,
           egress_dropped=fault.counters.egress.dropped_packets)


def pytest_faultd_fault_ended(fault, item):
    record(event="ended", id=fault.id, kind=fault.kind, state=fault.view.state,
           held_s=fault.held_s, egress_dropped=fault.counters.egress.dropped_packets)
'''

#: The helpers test_rto imports: a real failure (a partition of b's service) and its heal.
HELPERS_MODULE = '''
import os, sys, time
sys.path.insert(0, os.environ["FAULTD_TEST_HELPERS"])
from lab import Lab, TcpServer, tcp_connects, wait_for

from faultd_client import Client, Match, RecoveryTimer, Target, partition_fault

LAB = Lab.from_env()
_state = {}


def inject_failure():
    """Cuts a off from b's service; returns once a probe has seen it fail."""
    _state["server"] = TcpServer(LAB.b, 7311)
    _state["client"] = client = Client()
    target = Target(LAB.a.dev, netns=LAB.a.netns, match=Match(dst=[LAB.b.addr]))
    _state["fault"] = client.apply(partition_fault(target, 30), lease=True)
    assert wait_for(lambda: not tcp_connects(LAB.a, LAB.b.addr, 7311, 0.2), timeout=5)


def perform_recovery():
    """Heals, and returns once the service answers again."""
    _state["client"].revoke(_state["fault"].id)
    assert wait_for(lambda: tcp_connects(LAB.a, LAB.b.addr, 7311, 0.2), timeout=5)
    _state["client"].close()
    _state["server"].close()
'''


@pytest.fixture
def project(pytester: pytest.Pytester, lab: Lab, client: fc.Client,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    """A fresh project aimed at the lab: a's device, towards b."""
    for name, value in (("FAULTLINE_DEV", lab.a.dev), ("FAULTLINE_NETNS", lab.a.netns),
                        ("FAULTLINE_PEER", lab.b.addr), ("FAULTD_TEST_HELPERS", HELPERS),
                        ("PROBES", str(pytester.path / "probes.jsonl")),
                        ("PYTHONDONTWRITEBYTECODE", "1")):
        monkeypatch.setenv(name, value)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(chaos_helpers=HELPERS_MODULE)
    yield pytester


def probes(project: pytest.Pytester) -> List[Dict[str, Any]]:
    path = project.path / "probes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def properties(junit: Path, test: str) -> Dict[str, str]:
    case = next(c for c in ET.parse(junit).iter("testcase") if c.get("name") == test)
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


def test_the_issues_tests_run_verbatim(project: pytest.Pytester, client: fc.Client) -> None:
    project.makepyfile(test_resilience=VERBATIM)
    junit = project.path / "junit.xml"
    reports = project.path / "reports"
    result = project.runpytest_subprocess("-v", "-p", "no:cacheprovider",
                                          f"--junitxml={junit}", f"--faultd-report-dir={reports}")
    netem = client.hello().missing("egress_delay") is None
    output = result.stdout.str()
    if netem:
        result.assert_outcomes(passed=2)
    else:
        # The latency block fails the test with faultd's reason, naming the capability.
        result.assert_outcomes(passed=1, failed=1)
        assert "UnsupportedError: faultd refused apply: unsupported: this kernel lacks " \
               "egress_delay" in output, output

    # The disconnect held for its 5 s, and the traffic saw it in both directions.
    seen = probes(project)
    applied = [p for p in seen if p["event"] == "applied" and p["kind"] == "partition"]
    assert len(applied) == 1, seen
    cut = applied[0]
    assert (cut["tcp_a_to_b"], cut["tcp_b_to_a"]) == (False, False), cut
    assert (cut["udp_sent"], cut["udp_received"]) == (100, 0), cut
    ended = next(p for p in seen if p["event"] == "ended" and p["id"] == cut["id"])
    assert ended["held_s"] >= 5.0 and ended["state"] == "revoked", ended
    assert ended["egress_dropped"] >= 100

    example = properties(junit, "test_example")
    assert example["faultd.0.id"] == cut["id"] and example["faultd.0.kind"] == "partition"
    assert int(example["faultd.0.egress_dropped_packets"]) == ended["egress_dropped"]
    if netem:
        assert [p["kind"] for p in seen if p["event"] == "applied"] == \
            ["partition", "latency", "loss"]
        # netem never delivers early: a connection made under the 500 ms latency took longer.
        latency = next(p for p in seen if p["event"] == "applied" and p["kind"] == "latency")
        assert latency["connect_s"] is not None and latency["connect_s"] >= 0.5, latency

    rto = properties(junit, "test_rto")
    assert rto["recovery.meets_rto"] == "True" and float(rto["recovery.rto_s"]) == 30.0
    assert 0 < float(rto["recovery.recovery_s"]) < 5
    report = json.loads((reports / "test_resilience.py_test_rto.json").read_text())
    assert report["validation"]["verdict"] == "pass"
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["counts"]["pass"] == 1 and summary["verdict"] == "pass"
    assert summary["scenarios"][0]["report"] == "test_resilience.py_test_rto.json"
    assert "recovery scorecard (faultd)" in output
    assert client.list() == []


def test_unsupported_skips_when_asked(project: pytest.Pytester, client: fc.Client,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if client.hello().missing("egress_delay") is None:
        pytest.skip("this kernel has netem: nothing is unsupported to skip")  # the VM's kernels
    project.makepyfile(test_resilience=VERBATIM)
    monkeypatch.setenv("FAULTLINE_SKIP_UNSUPPORTED", "1")
    result = project.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*faultd: this kernel lacks egress_delay*"])
    assert client.list() == []


def test_the_loss_block_drops_a_fifth(project: pytest.Pytester, client: fc.Client) -> None:
    # test_example's loss block on its own: on a kernel without netem the latency block before
    # it ends test_example first.
    project.makepyfile(test_loss='''
def test_loss(network_fault_injector):
    with network_fault_injector.inject_packet_loss(loss_probability=0.20):
        pass  # 20 % of packets dropped
''')
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    applied, ended = probes(project)
    sent, received = applied["udp_sent"], applied["udp_received"]
    assert sent == 2000 and ended["state"] == "revoked"
    # Exact: what b missed is what the fault dropped (the UDP goes one way: a's egress).
    assert ended["egress_dropped"] == sent - received
    assert within_binomial(sent - received, 2000, 0.2)
    assert client.list() == []


def test_a_test_killed_inside_a_block_leaves_no_fault(project: pytest.Pytester, lab: Lab,
                                                      client: fc.Client) -> None:
    project.makeconftest("")  # no probes
    project.makepyfile(test_killed='''
import time

def test_held(network_fault_injector):
    with network_fault_injector.inject_disconnect(duration_s=60):
        time.sleep(60)
''')
    test = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                            cwd=project.path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(client.list()) == 1, timeout=30), "no fault appeared"
        test.send_signal(signal.SIGKILL)
        test.wait()
        # faultd revokes the lease as the dead process's socket closes.
        assert wait_for(lambda: client.list() == [], timeout=1.0), client.list()
    finally:
        if test.poll() is None:
            test.kill()
            test.wait()


def test_an_unreachable_faultd_fails_the_test_saying_where(project: pytest.Pytester) -> None:
    project.makepyfile(test_nothing='''
import pytest

@pytest.mark.chaos
def test_needs_faultd(network_fault_injector):
    pass
''')
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers",
                                          "--faultd-socket=/nonexistent/faultd.sock")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*faultd: cannot reach faultd at /nonexistent/faultd.sock*"])
