"""The client against the lab's faultd: every op, every refusal the lab can provoke, and counters
that agree with what the traffic saw (counted on the far side)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import signal
import stat
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest
from lab import Lab, TcpServer, tcp_connects, udp_burst, wait_for, within_binomial

import faultd_client as fc
from faultd_client.report import faultctl_args

#: Long enough for a partitioned connect to be refused for certain, short enough to be quick.
BLOCKED_PROBE_S = 0.5


def target(lab: Lab, proto: str = "udp") -> fc.Target:
    """a's device, towards b: UDP only by default, so the lab's counters are exactly ours."""
    return fc.Target(lab.a.dev, netns=lab.a.netns, match=fc.Match(proto=proto, dst=[lab.b.addr]))


def key() -> str:
    return f"py-test-{uuid.uuid4().hex[:8]}"


def test_hello(client: fc.Client) -> None:
    hello = client.hello()
    assert (hello.agent, hello.protocol) == ("faultd", fc.PROTOCOL)
    assert hello.capabilities["ebpf_faults"].available
    assert hello.missing("ebpf_faults") is None
    assert hello.limits.max_duration == "1h" and hello.limits.max_line_bytes == 65536
    if os.environ.get("FAULTLINE_EXPECT_NETEM"):
        assert hello.missing("egress_delay") is None


def test_a_partition_drops_what_its_counters_say(client: fc.Client, lab: Lab) -> None:
    view = client.apply(fc.partition_fault(target(lab), 30), lease=True)
    assert view.lease == "connection" and view.fault.target.direction == "both"
    sent, received = udp_burst(lab.a, lab.b, 7101, 200)
    assert (sent, received) == (200, 0)
    live = client.get(view.id).counters
    assert live.egress.matched_packets == live.egress.dropped_packets == 200
    assert live.ingress.matched_packets == 0
    final = client.revoke(view.id)
    assert final.state == "revoked" and final.remaining_ms == 0
    assert final.counters.egress.dropped_packets == 200
    assert udp_burst(lab.a, lab.b, 7102, 50, pace_s=0.001)[1] > 25  # the path heals


def test_loss_drops_what_the_receiver_misses(client: fc.Client, lab: Lab) -> None:
    view = client.apply(fc.loss_fault(target(lab), 50, 30), lease=True)
    sent, received = udp_burst(lab.a, lab.b, 7103, 2000)
    final = client.revoke(view.id).counters.egress
    # Exact: every datagram the receiver misses was dropped by the fault, and counted.
    assert final.matched_packets == sent == 2000
    assert final.dropped_packets == sent - received
    assert within_binomial(2000 - received, 2000, 0.5)


def test_every_op(client: fc.Client, lab: Lab) -> None:
    with client.watch() as watch:
        k = key()
        spec = fc.partition_fault(target(lab), "10s", label="every op")
        view = client.apply(spec, key=k)
        assert (view.key, view.state, view.lease) == (k, "active", None)
        assert view.fault.target.match == fc.Match(proto="udp", dst=[f"{lab.b.addr}/32"])
        assert client.apply(spec, key=k).id == view.id  # idempotent: the same fault
        assert [v.id for v in client.list()] == [view.id]
        assert client.find(k) == client.get(view.id) or client.find(k).id == view.id
        renewed = client.renew(view.id, 300)
        assert renewed.remaining_ms > 10_000 and renewed.expires_at_unix_ms > view.expires_at_unix_ms

        plan = client.plan(fc.loss_fault(target(lab), 5, "10s"))
        assert plan.dry_run and plan.fault.loss == fc.Loss(percent=5.0)
        kinds = [o.kind for o in plan.objects]
        assert kinds[-1] == "trie_entry" and "fault_slot" in kinds
        assert len(client.list()) == 1  # a dry run changes nothing

        metrics = client.metrics()
        assert [f.id for f in metrics.faults] == [view.id]
        applied = [r for r in metrics.requests if (r.op, r.code) == ("apply", "ok")]
        assert applied and applied[0].count >= 2
        assert metrics.datapath_memory_bytes and metrics.datapath_memory_bytes > 0

        other = client.apply(fc.loss_fault(target(lab), 10, "10s"))
        final = client.revoke(view.id)
        assert final.state == "revoked"
        with pytest.raises(fc.NotFoundError):
            client.revoke(view.id)
        assert [v.id for v in client.clear()] == [other.id]
        assert client.list() == [] and client.clear() == []

        events = []
        while len(events) < 5:
            event = watch.next_event(timeout=5)
            assert event is not None
            events.append((event.event, event.fault.id if event.fault else None))
    assert events == [("applied", view.id), ("renewed", view.id), ("applied", other.id),
                      ("revoked", view.id), ("revoked", other.id)]


def test_refusals_carry_code_message_and_field(client: fc.Client, lab: Lab) -> None:
    def refused(cls: type, call: object, field: object = None) -> fc.FaultdError:
        with pytest.raises(cls) as caught:
            call()  # type: ignore[operator]
        assert caught.value.message and caught.value.field == field, caught.value
        return caught.value

    conn = client.endpoint.open_connection()
    try:
        conn.send_raw(b"this is not json\n")
        message = conn.read_message(5)
        assert message is not None and message["id"] is None
        assert isinstance(fc.errors.error_from_wire(message["error"]), fc.ParseError)
    finally:
        conn.close()
    refused(fc.InvalidRequestError, lambda: client.request("list", verbose=True), "verbose")
    refused(fc.UnknownOpError, lambda: client.request("explode"), "op")
    host_bits = fc.Target(lab.a.dev, netns=lab.a.netns, match=fc.Match(dst=["10.0.0.1/24"]))
    refused(fc.InvalidValueError, lambda: client.apply(fc.partition_fault(host_bits, 5)),
            "fault.target.match.dst[0]")
    refused(fc.NotFoundError, lambda: client.get("f00000000"), "fault_id")
    refused(fc.NetnsNotFoundError, lambda: client.apply(
        fc.partition_fault(fc.Target("lo", netns="fl-no-such-netns"), 5)), "fault.target.netns")
    refused(fc.DeviceNotFoundError, lambda: client.apply(
        fc.partition_fault(fc.Target("flnosuchdev0", netns=lab.a.netns), 5)), "fault.target.dev")
    k = key()
    client.apply(fc.partition_fault(target(lab), 10), key=k, lease=True)
    conflict = refused(fc.ConflictError, lambda: client.apply(
        fc.partition_fault(target(lab), 20), key=k), "key")
    assert client.find(k).id in conflict.message  # type: ignore[union-attr]
    client.clear()

    latency = fc.delay_fault(target(lab), 0.05, duration=5)
    if client.hello().missing("egress_delay"):
        refusal = refused(fc.UnsupportedError, lambda: client.apply(latency))
        assert refusal.capability == "egress_delay", refusal
    else:
        client.revoke(client.apply(latency).id)

    # 32 faults may overlap one remote address on one device; the 33rd may not.
    with fc.Client(lab.socket) as holder:
        for n in range(32):
            holder.apply(fc.loss_fault(target(lab), 1 + n, 10), lease=True)
        refused(fc.LimitExceededError, lambda: client.apply(fc.loss_fault(target(lab), 50, 10)))
    assert wait_for(lambda: client.list() == [], timeout=1.0)

    # A line over 64 KiB: faultd answers line_too_long (id null) and closes the connection;
    # a client holding no lease then reconnects for its next request.
    with fc.Client(lab.socket) as fresh:
        refused(fc.LineTooLongError, lambda: fresh.apply(
            fc.partition_fault(target(lab), 5, label="x" * 70_000)))
        assert fresh.hello().agent == "faultd"
    assert client.list() == []


def test_policy_and_connection_limit_refusals(lab: Lab) -> None:
    assert lab.policy_socket, "the driver starts a second faultd with a policy"
    with fc.Client(lab.policy_socket) as policy:
        with pytest.raises(fc.ForbiddenError) as caught:
            policy.apply(fc.loss_fault(target(lab), 60, 5))
        assert caught.value.field == "limits.max_loss_percent"
        assert policy.hello().policy["limits"]["max_loss_percent"] == 50  # type: ignore[index]
    # That faultd takes 4 connections at most: the 5th gets `busy` and is closed.
    held: List[fc.Client] = []
    try:
        for _ in range(4):
            held.append(fc.Client(lab.policy_socket))
            held[-1].hello()
        fifth = fc.Endpoint(lab.policy_socket).open_connection()
        try:
            with pytest.raises(fc.BusyError):
                fifth.request("hello", {})
        finally:
            fifth.close()
    finally:
        for c in held:
            c.close()


def test_an_idle_connection_is_closed_and_takes_its_lease_along(lab: Lab) -> None:
    # The policy faultd closes connections idle for 1 s (--idle-timeout 1s).
    assert lab.policy_socket
    with _connect_when_free(lab.policy_socket) as plain, \
            _connect_when_free(lab.policy_socket) as leasing:
        view = leasing.apply(fc.partition_fault(target(lab), 30), lease=True)
        assert wait_for(lambda: _closed_by_faultd(leasing), timeout=5.0)
        with pytest.raises((fc.BusyError, fc.ConnectionClosedError)):
            leasing.get(view.id)  # its lease went with the connection: no silent reconnect
        assert wait_for(lambda: _closed_by_faultd(plain), timeout=5.0)
        assert plain.list() == []  # a client without leases reconnects


def _connect_when_free(path: str) -> fc.Client:
    """A client of the 4-connection faultd, once the connections of the test before are gone
    (faultd notices a close a moment after it happens)."""
    clients: List[fc.Client] = []

    def connected() -> bool:
        try:
            c = fc.Client(path)
            c.hello()
            clients.append(c)
            return True
        except fc.BusyError:
            c.close()
            return False
    assert wait_for(connected, timeout=2.0)
    return clients[0]


def _closed_by_faultd(client: fc.Client) -> bool:
    """Whether faultd has written its `busy` line (and closed) on the client's connection,
    without reading it."""
    sock = client.connection._sock  # a look at the socket, for the test only
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)
        sock.settimeout(fc.DEFAULT_TIMEOUT_S)


def test_a_lease_ends_with_its_connection(client: fc.Client, lab: Lab) -> None:
    with TcpServer(lab.b, 7104):
        holder = fc.Client(lab.socket)
        view = holder.apply(fc.partition_fault(target(lab, proto="tcp"), 60), lease=True)
        assert not tcp_connects(lab.a, lab.b.addr, 7104, BLOCKED_PROBE_S)
        holder.close()
        assert wait_for(lambda: client.list() == [], timeout=1.0), view.id
        assert tcp_connects(lab.a, lab.b.addr, 7104, 2.0)


def test_a_timed_out_apply_retried_with_its_key_makes_one_fault(client: fc.Client,
                                                                lab: Lab) -> None:
    # faultd stopped (SIGSTOP) cannot answer: every attempt times out, each one sent again with
    # the first one's key. Let go, it carries out all three: one fault.
    faultd_pid = _peer_pid(client.connection._sock)  # a look at the socket, for the test only
    with fc.Client(lab.socket, timeout=0.2) as impatient:
        k = key()
        os.kill(faultd_pid, signal.SIGSTOP)
        try:
            with pytest.raises(fc.RequestTimeoutError):
                impatient.apply(fc.partition_fault(target(lab), 10), key=k, retries=2)
        finally:
            os.kill(faultd_pid, signal.SIGCONT)
        # The three late answers come first on this connection, and are skipped.
        assert [v.key for v in impatient.list()] == [k]
    client.clear()


def _peer_pid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


@pytest.fixture
def fake_ssh() -> Iterator[Path]:
    """Stands in for ssh: records its arguments and forwards `-L LOCAL:REMOTE` with socat."""
    directory = Path(tempfile.mkdtemp(prefix="faultd-client-fake-ssh-"))
    program = directory / "ssh"
    program.write_text(
        "#!/bin/bash\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n"
        "for a in \"$@\"; do [ \"$prev\" = -L ] && fwd=$a; prev=$a; done\n"
        "exec socat UNIX-LISTEN:\"${fwd%%:*}\",fork UNIX-CONNECT:\"${fwd#*:}\"\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    yield program
    shutil.rmtree(directory)


def test_ssh_forwarding_as_faultctl_does_it(lab: Lab, fake_ssh: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTLINE_SSH", str(fake_ssh))
    with fc.Client(lab.socket, ssh="root@host-a") as remote:
        assert remote.hello().agent == "faultd"
        args = (fake_ssh.parent / "args").read_text().splitlines()
        local = args[args.index("-L") + 1].split(":")[0]
        assert Path(local).exists()
    assert args[:5] == ["-nNT", "-o", "ExitOnForwardFailure=yes", "-o",
                        "StreamLocalBindUnlink=yes"]
    assert args[-2:] == ["--", "root@host-a"]
    assert args[args.index("-L") + 1].endswith(":" + lab.socket)
    assert not Path(local).parent.exists(), "the tunnel's socket was left behind"
    monkeypatch.setenv("FAULTLINE_SSH", "false")
    with pytest.raises(fc.UnreachableError, match="ssh exited"):
        fc.Client(lab.socket, ssh="nobody@nowhere")


def test_faultctl_args_apply_the_same_fault(client: fc.Client, lab: Lab) -> None:
    faultctl = Path(os.environ["FAULTLINE_BIN_DIR"]) / "faultctl"
    for fault in (
        fc.partition_fault(target(lab), 5, label="drill"),
        fc.loss_fault(fc.Target(lab.a.dev, netns=lab.a.netns, direction="both", flows=0.5,
                                match=fc.Match(proto="tcp", dport=[80, "9000-9100"],
                                               src=[f"{lab.a.addr}/32"])), 12.5, "1m"),
        fc.burst_loss_fault(target(lab), fc.Burst(p=1, r=25, loss_good=0.5), "2m"),
    ):
        out = subprocess.run([str(faultctl), "--socket", lab.socket, *faultctl_args(fault),
                              "--dry-run"], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout)["fault"] == client.plan(fault).fault.to_wire()


def test_a_watch_sees_a_lease_end(client: fc.Client, lab: Lab) -> None:
    with client.watch() as watch:
        holder = fc.Client(lab.socket)
        view = holder.apply(fc.partition_fault(target(lab), 30), lease=True)
        started = time.monotonic()
        holder.close()
        kinds = [(e.event, e.fault.id if e.fault else "") for e in
                 (watch.next_event(5), watch.next_event(5))]
        assert kinds == [("applied", view.id), ("revoked", view.id)]
        assert time.monotonic() - started < 1.0
