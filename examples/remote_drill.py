#!/usr/bin/env python3
"""Partition two hosts from each other for a drill, through their faultd sockets.

Each socket is usually a remote faultd's, forwarded over ssh (see README.md here):

    ssh -nNT -o StreamLocalBindUnlink=yes -L /tmp/a.sock:/run/faultline/faultd.sock root@host-a &
    ssh -nNT -o StreamLocalBindUnlink=yes -L /tmp/b.sock:/run/faultline/faultd.sock root@host-b &
    ./remote_drill.py --a-socket /tmp/a.sock --a-addr 10.0.0.1 \\
                      --b-socket /tmp/b.sock --b-addr 10.0.0.2 --dev eth0 --hold 20

With one socket it cuts that host off from --peer. Each partition is leased to this program's
connection and renewed while the drill holds: if the program dies, faultd revokes it as the
connection closes, and at the latest at its deadline (--for from the last renew). Only the
Python standard library is used; the protocol is docs/protocol.md.

Exit status: 0 done, 1 error, 2 usage, 3 refused by faultd, 4 faultd unreachable or busy,
128+N stopped by signal N (faults revoked).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

PROTOCOL = 1
EXIT_ERROR, EXIT_REFUSED, EXIT_UNREACHABLE = 1, 3, 4


class FaultdError(Exception):
    """faultd refused a request: its stable error code, message and the field at fault."""

    def __init__(self, code: str, message: str, field: Optional[str] = None,
                 host: str = "", op: str = "") -> None:
        super().__init__(f"{host}: {op} refused: {code}: {message}"
                         + (f" (field {field})" if field else ""))
        self.code, self.message, self.field = code, message, field
        self.host, self.op = host, op


class FaultdClient:
    """One connection to one faultd: JSON Lines, one request in flight at a time.

    Faults applied with `lease="connection"` live only as long as this connection.
    """

    def __init__(self, name: str, path: str, timeout: float) -> None:
        self.name = name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise
        self._buf = b""
        self._next_id = 0

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Sends one request and returns its `result`; raises FaultdError if refused,
        OSError (socket.timeout included) if the connection fails or is too slow."""
        self._next_id += 1
        rid = self._next_id
        self._sock.sendall((json.dumps({"id": rid, "op": op, **args}) + "\n").encode())
        while True:
            response = json.loads(self._readline())
            # Answers come in request order: after a timeout, the late answer to an earlier
            # request arrives first and is skipped. `busy` and the like carry "id": null.
            answered = response.get("id")
            if not (isinstance(answered, int) and answered < rid):
                break
        if not response.get("ok"):
            error = response.get("error") or {}
            raise FaultdError(str(error.get("code")), str(error.get("message")),
                              error.get("field"), self.name, op)
        return response["result"]

    def _readline(self) -> bytes:
        # Own buffering rather than makefile(): a timeout must leave the buffer intact.
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("faultd closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def close(self) -> None:
        self._sock.close()


@dataclass
class Host:
    name: str
    socket: str
    dev: str
    netns: Optional[str]
    peer: str
    client: Optional[FaultdClient] = None
    key: Optional[str] = None  # set once its apply is under way
    fault_id: Optional[str] = None  # set once faultd answered it


class DrillError(Exception):
    """Something other than a refusal stops the drill, e.g. a protocol version mismatch."""


class Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def seconds(duration: str) -> float:
    """A protocol duration ("30s", "1m30s", "500ms") in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    term = r"(\d+(?:\.\d+)?)(us|ms|s|m|h)"
    if not re.fullmatch(f"(?:{term})+", duration):
        raise argparse.ArgumentTypeError(f"{duration!r} is not a duration like 30s or 1m30s")
    return sum(float(n) * units[u] for n, u in re.findall(term, duration))


def connect(host: Host, timeout: float) -> FaultdClient:
    client = FaultdClient(host.name, host.socket, timeout)
    try:
        check_hello(host, client.request("hello"))
    except BaseException:
        client.close()
        raise
    return client


def check_hello(host: Host, hello: dict[str, Any]) -> None:
    features = hello.get("features", {})
    yes_no = {True: "yes", False: "no"}
    print(f"{host.name}: faultd {hello.get('version')}, protocol {hello.get('protocol')}, "
          f"kernel {hello.get('kernel')}, ebpf_tc {yes_no.get(features.get('ebpf_tc'), '?')}, "
          f"netem {yes_no.get(features.get('netem'), '?')}, "
          f"faults active: {hello.get('active_faults')}")
    if hello.get("protocol") != PROTOCOL:
        raise DrillError(f"{host.name}: faultd speaks protocol {hello.get('protocol')}; "
                         f"this example speaks {PROTOCOL}")
    if not features.get("ebpf_tc"):
        raise DrillError(f"{host.name}: this kernel cannot run faultd's datapath "
                         "(features.ebpf_tc is false): a partition would be refused")


def apply_partition(host: Host, duration: str, retries: int = 2) -> dict[str, Any]:
    assert host.client is not None and host.key is not None
    key = host.key
    target: dict[str, Any] = {"dev": host.dev, "match": {"dst": [host.peer]}}
    if host.netns:
        target["netns"] = host.netns
    fault = {"target": target, "partition": {}, "duration": duration,
             "label": f"remote_drill: {host.name} cut from {host.peer}"}
    for attempt in range(retries + 1):
        try:
            return host.client.request("apply", fault=fault, key=key, lease="connection")
        except socket.timeout:
            # The first apply may still be done: the same key then returns that fault, on
            # this same connection, which holds its lease.
            if attempt == retries:
                raise
            print(f"{host.name}: apply timed out; retrying with key {key}", file=sys.stderr)
    raise AssertionError("unreachable")


def counters(view: dict[str, Any]) -> str:
    c = view["counters"]
    return f"dropped {c['egress']['dropped_packets']} out / {c['ingress']['dropped_packets']} in"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 done, 1 error, 2 usage, 3 refused by faultd, "
               "4 faultd unreachable or busy, 128+N stopped by signal N.")
    parser.add_argument("--a-socket", required=True, help="host A's faultd socket (forwarded)")
    parser.add_argument("--b-socket", help="host B's faultd socket; without it, give --peer")
    parser.add_argument("--a-addr", help="host A's address (CIDR), as host B sees it")
    parser.add_argument("--b-addr", help="host B's address (CIDR), as host A sees it")
    parser.add_argument("--peer", help="with one socket: the address (CIDR) to cut host A off from")
    parser.add_argument("--dev", required=True, help="the device the faults go on, on each host")
    parser.add_argument("--netns", help="a network namespace on the hosts (name, path or pid:N)")
    parser.add_argument("--b-dev", help="host B's device, if not --dev")
    parser.add_argument("--b-netns", help="host B's network namespace, if not --netns")
    parser.add_argument("--for", dest="duration", default="30s", metavar="DURATION",
                        help="each fault's deadline, pushed back to this from now at every "
                             "renew (default 30s)")
    parser.add_argument("--hold", type=float, default=10.0, metavar="SECONDS",
                        help="how long the partition lasts (default 10)")
    parser.add_argument("--renew-every", type=float, default=2.0, metavar="SECONDS",
                        help="seconds between renews and counter reports (default 2)")
    parser.add_argument("--drill-id", default=f"remote-drill-{int(time.time())}-{os.getpid()}",
                        help="names this drill: the faults' keys are DRILL_ID-A and DRILL_ID-B")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for each answer (default 10)")
    args = parser.parse_args(argv)
    try:
        ttl = seconds(args.duration)
    except argparse.ArgumentTypeError as e:
        parser.error(f"--for: {e}")
    if args.b_socket and not (args.a_addr and args.b_addr):
        parser.error("with --b-socket, give --a-addr and --b-addr")
    if args.b_socket and args.peer:
        parser.error("--peer is for one socket; with --b-socket, give --a-addr and --b-addr")
    if not args.b_socket and not args.peer:
        parser.error("give --b-socket (two hosts) or --peer (one)")
    if args.hold <= 0 or not 0 < args.renew_every <= ttl / 2:
        parser.error("--hold must be positive, and --renew-every at most half of --for")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    hosts = [Host("A", args.a_socket, args.dev, args.netns, args.b_addr or args.peer)]
    if args.b_socket:
        hosts.append(Host("B", args.b_socket, args.b_dev or args.dev,
                          args.b_netns or args.netns, args.a_addr))

    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    # Ctrl-C and SIGTERM end the drill early, the same way: faults revoked, counters printed.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    host = hosts[0]
    try:
        for host in hosts:
            host.client = connect(host, args.timeout)
        for host in hosts:
            host.key = f"{args.drill_id}-{host.name}"
            view = apply_partition(host, args.duration)
            host.fault_id = view["id"]
            print(f"{host.name}: partition {view['id']} from {host.peer} on {host.dev}, "
                  f"leased, key {view.get('key')}, {view['remaining_ms'] / 1000:.1f}s left")
        print(f"holding for {args.hold:g}s, renewing every {args.renew_every:g}s "
              "(Ctrl-C ends the drill early)")
        until = time.monotonic() + args.hold
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(args.renew_every, left))
            for host in hosts:
                assert host.client is not None
                host.client.request("renew", fault_id=host.fault_id, duration=args.duration)
                view = host.client.request("get", fault_id=host.fault_id)
                print(f"{host.name}: {host.fault_id} renewed, "
                      f"{view['remaining_ms'] / 1000:.1f}s left; {counters(view)}")
    except Stopped as e:
        print(f"stopped by {e}: revoking")
        status = 128 + e.signum
    except FaultdError as e:
        print(f"error: {e.host}: faultd refused {e.op}\n  code:    {e.code}\n"
              f"  message: {e.message}\n  field:   {e.field or '-'}", file=sys.stderr)
        if e.code == "not_found" and e.op in ("renew", "get"):
            print("  (the fault ended early: expired, or revoked by someone else)",
                  file=sys.stderr)
        status = EXIT_UNREACHABLE if e.code == "busy" else EXIT_REFUSED
    except DrillError as e:
        print(f"error: {e}", file=sys.stderr)
        status = EXIT_ERROR
    except (OSError, ValueError) as e:
        if host.client is None:
            print(f"error: {host.name}: cannot reach faultd at {host.socket}: {e} (is the "
                  "ssh forward running? the socket is root-only, mode 0660)", file=sys.stderr)
            status = EXIT_UNREACHABLE
        else:
            print(f"error: {host.name}: connection to faultd failed: {e}", file=sys.stderr)
            status = EXIT_ERROR
    finally:
        status = cleanup(hosts, status)
    return status


def cleanup(hosts: list[Host], status: int) -> int:
    def give_up(signum: int, _frame: Any) -> None:
        # A second Ctrl-C while revoking: leave the rest to the leases (connections close
        # as this process exits) and the deadlines.
        print("stopped again: the leases revoke the rest", file=sys.stderr)
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, give_up)
    signal.signal(signal.SIGTERM, give_up)
    for host in hosts:
        if host.client is None:
            continue
        if host.fault_id is None and host.key is not None:
            # Stopped while its apply was under way: the fault may exist, and its key finds it.
            try:
                found = [f["id"] for f in host.client.request("list")["faults"]
                         if f.get("key") == host.key]
                host.fault_id = found[0] if found else None
            except (FaultdError, OSError, ValueError):
                pass  # closing the connection below ends its lease anyway
        if host.fault_id is not None:
            try:
                view = host.client.request("revoke", fault_id=host.fault_id)
                print(f"{host.name}: revoked {host.fault_id}; {counters(view)}")
            except FaultdError as e:
                if e.code != "not_found":  # not_found: it already ended at its deadline
                    print(f"error: {e}", file=sys.stderr)
                    status = status or EXIT_REFUSED
            except (OSError, ValueError) as e:
                # The connection is gone, and with it the lease: faultd revoked the fault.
                print(f"{host.name}: {e}; the lease ended {host.fault_id}", file=sys.stderr)
        host.client.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
