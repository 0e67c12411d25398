"""NetworkFaultInjector's blocks against the lab: the fault holds for the block, traffic shows it,
and nothing is left when the block ends, however it ends."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Iterator, List

import pytest
from lab import (Lab, Side, TcpServer, in_netns, tcp_connects, udp_burst, wait_for,
                 within_binomial)

import faultd_client as fc

BLOCKED_PROBE_S = 0.5


@pytest.fixture
def injector(lab: Lab, client: fc.Client) -> Iterator[fc.NetworkFaultInjector]:
    """Aimed at a's device, towards b; `client` checks that nothing is left after the test."""
    injector = fc.NetworkFaultInjector(lab.a.dev, netns=lab.a.netns, peer=[lab.b.addr],
                                       endpoint=fc.Endpoint(lab.socket))
    yield injector
    injector.endpoint.close()


def test_a_disconnect_cuts_both_directions_for_its_duration(
        injector: fc.NetworkFaultInjector, lab: Lab, client: fc.Client) -> None:
    with TcpServer(lab.b, 7201), TcpServer(lab.a, 7202):
        started = time.monotonic()
        with injector.inject_disconnect(duration_s=2.0) as f:
            assert [v.id for v in client.list()] == [f.id]
            assert client.get(f.id).lease == "connection"
            assert not tcp_connects(lab.a, lab.b.addr, 7201, BLOCKED_PROBE_S)
            assert not tcp_connects(lab.b, lab.a.addr, 7202, BLOCKED_PROBE_S)
            assert udp_burst(lab.a, lab.b, 7203, 100) == (100, 0)
            live = f.counters
        held = time.monotonic() - started
        # The body took about a second; the block lasted the disconnect's duration.
        assert 2.0 <= held < 3.0, held
        assert client.list() == []
        assert f.ended and f.view.state == "revoked"
        assert f.counters.egress.dropped_packets >= live.egress.dropped_packets >= 100
        assert f.counters.ingress.dropped_packets > 0  # b's SYNs, dropped as they arrive
        assert tcp_connects(lab.a, lab.b.addr, 7201, 2.0)


def test_packet_loss_counters_agree_with_the_receiver(
        injector: fc.NetworkFaultInjector, lab: Lab, client: fc.Client) -> None:
    udp_only = fc.NetworkFaultInjector(lab.a.dev, netns=lab.a.netns, peer=[lab.b.addr],
                                       proto="udp", endpoint=injector.endpoint)
    with udp_only.inject_packet_loss(loss_probability=0.2) as f:
        assert f.fault.loss == fc.Loss(percent=20.0)
        assert f.fault.target.direction == "both"
        sent, received = udp_burst(lab.a, lab.b, 7204, 2000)
        live = f.counters
    assert live.egress.matched_packets == sent == 2000
    assert live.egress.dropped_packets == sent - received
    assert within_binomial(sent - received, 2000, 0.2)
    assert f.counters.egress.dropped_packets == sent - received  # final, from the revoke
    assert client.list() == []


def test_a_body_that_raises_ends_the_fault_at_once(injector: fc.NetworkFaultInjector,
                                                    client: fc.Client) -> None:
    started = time.monotonic()
    with pytest.raises(KeyError):
        with injector.inject_disconnect(duration_s=30):
            raise KeyError("boom")
    assert time.monotonic() - started < 5
    assert client.list() == []


def test_inject_takes_any_fault(injector: fc.NetworkFaultInjector, lab: Lab,
                                client: fc.Client) -> None:
    burst = fc.burst_loss_fault(injector.target, fc.Burst(p=1, r=25))
    with injector.inject(burst) as f:
        view = client.get(f.id)
        assert view.fault.loss and view.fault.loss.burst == fc.Burst(p=1.0, r=25.0, loss_bad=100.0,
                                                                     loss_good=0.0)
        assert view.fault.duration == "10m"  # no duration given: held by the block
        assert f.kind == "loss"
    with injector.inject({"target": {"dev": lab.a.dev, "netns": lab.a.netns},
                          "partition": {}, "duration": "1s"}) as f:
        assert f.kind == "partition"
    assert f.held_s >= 1.0
    assert client.list() == []


def test_latency_delays_round_trips_or_is_refused_naming_the_capability(
        injector: fc.NetworkFaultInjector, lab: Lab, client: fc.Client) -> None:
    if client.hello().missing("egress_delay"):
        with pytest.raises(fc.UnsupportedError) as refused:
            with injector.inject_latency(latency_ms=500):
                pytest.fail("the block ran without its fault")
        assert refused.value.capability == "egress_delay"
        assert "this kernel lacks egress_delay" in str(refused.value)
        assert client.list() == []
        return
    before = udp_rtts(lab.a, lab.b, 7205, 10)
    with injector.inject_latency(latency_ms=200, jitter_ms=0) as f:
        assert f.kind == "latency"
        during = udp_rtts(lab.a, lab.b, 7206, 10)
    after = udp_rtts(lab.a, lab.b, 7207, 10)
    # netem holds each of a's packets at least the delay; the kernel promises no upper bound,
    # so the bound above is generous (a VM under emulation is slow).
    assert min(during) >= 0.2, during
    assert statistics.median(during) - statistics.median(before) < 0.2 + 0.5, (before, during)
    assert statistics.median(after) < 0.2, after


def udp_rtts(sender: Side, echo: Side, port: int, count: int) -> List[float]:
    """Round trips of `count` datagrams from `sender` to a UDP echo on `echo`, in seconds."""
    def serve() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((echo.addr, port))
        return s
    server = in_netns(echo.netns, serve)
    stop = threading.Event()

    def reflect() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(64)
                server.sendto(data, peer)
            except OSError:
                continue

    thread = threading.Thread(target=reflect, daemon=True)
    thread.start()
    client = in_netns(sender.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    client.settimeout(5)
    rtts = []
    try:
        for n in range(count):
            started = time.monotonic()
            client.sendto(n.to_bytes(4, "big"), (echo.addr, port))
            while int.from_bytes(client.recv(64), "big") != n:
                pass
            rtts.append(time.monotonic() - started)
    finally:
        stop.set()
        thread.join()
        client.close()
        server.close()
    return rtts


def test_keep_alive_holds_the_lease_past_the_idle_timeout(lab: Lab) -> None:
    # The policy faultd closes connections idle for 1 s; the block's pings keep its lease.
    assert lab.policy_socket
    endpoint = fc.Endpoint(lab.policy_socket)
    injector = fc.NetworkFaultInjector(lab.a.dev, netns=lab.a.netns, peer=[lab.b.addr],
                                       endpoint=endpoint, keepalive_s=0.3)
    observer = fc.Client(endpoint=endpoint)
    try:
        with injector.inject_disconnect(duration_s=2.5) as f:
            pass
        assert f.view.state == "revoked", "the lease ended before the block did"
        assert wait_for(lambda: observer.list() == [], timeout=1.0)
    finally:
        observer.close()
        endpoint.close()
