#!/usr/bin/env python3
"""Partition two hosts from each other for a drill, through their faultd sockets.

Each socket is usually a remote faultd's, forwarded over ssh (see README.md here):

    ssh -nNT -o StreamLocalBindUnlink=yes -L /tmp/a.sock:/run/faultline/faultd.sock root@host-a &
    ssh -nNT -o StreamLocalBindUnlink=yes -L /tmp/b.sock:/run/faultline/faultd.sock root@host-b &
    ./remote_drill.py --a-socket /tmp/a.sock --a-addr 10.0.0.1 \\
                      --b-socket /tmp/b.sock --b-addr 10.0.0.2 --dev eth0 --hold 20

With one socket it cuts that host off from --peer. The partition is leased to this
program's connections and renewed while it holds: if the program dies, faultd revokes it as
the connection closes, and at the latest at its deadline (--for). Only the Python standard
library is used; the protocol is docs/protocol.md.
"""

import argparse
import json
import signal
import socket
import sys
import time


class FaultdError(Exception):
    """faultd refused a request: its stable error code, message and the field at fault."""

    def __init__(self, code, message, field=None):
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code, self.message, self.field = code, message, field


class FaultdClient:
    """One connection to faultd: JSON Lines, one request in flight at a time."""

    def __init__(self, path, name):
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.lines = self.sock.makefile("rb")
        self.next_id = 0

    def request(self, op, **args):
        self.next_id += 1
        self.sock.sendall((json.dumps({"id": self.next_id, "op": op, **args}) + "\n").encode())
        line = self.lines.readline()
        if not line:
            raise ConnectionError(f"{self.name}: faultd closed the connection")
        response = json.loads(line)
        if not response.get("ok"):
            error = response.get("error", {})
            raise FaultdError(error.get("code"), error.get("message"), error.get("field"))
        return response["result"]

    def close(self):
        self.sock.close()


def partition(client, dev, netns, duration, peer, key):
    target = {"dev": dev, "match": {"dst": [peer]}}
    if netns:
        target["netns"] = netns
    fault = {"target": target, "partition": {}, "duration": duration,
             "label": f"remote_drill: cut from {peer}"}
    # The key makes a retried apply return the same fault instead of a second one.
    return client.request("apply", fault=fault, key=key, lease="connection")


def counters(view):
    c = view["counters"]
    return (f"dropped {c['egress']['dropped_packets']} out / "
            f"{c['ingress']['dropped_packets']} in")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-socket", required=True, help="host A's faultd socket (forwarded)")
    parser.add_argument("--a-addr", help="host A's address, as host B sees it")
    parser.add_argument("--b-socket", help="host B's faultd socket; without it, --peer")
    parser.add_argument("--b-addr", help="host B's address, as host A sees it")
    parser.add_argument("--peer", help="with one socket: the address to cut host A off from")
    parser.add_argument("--dev", required=True, help="the device faults go on, on each host")
    parser.add_argument("--netns", help="a network namespace on the hosts (name, path, pid:N)")
    parser.add_argument("--b-dev", help="host B's device, if not --dev")
    parser.add_argument("--b-netns", help="host B's network namespace, if not --netns")
    parser.add_argument("--for", dest="duration", default="60s",
                        help="each fault's deadline, renewed while holding (default 60s)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold the partition")
    parser.add_argument("--renew-every", type=float, default=1.0, help="seconds between renews")
    args = parser.parse_args()
    if args.b_socket and not (args.a_addr and args.b_addr):
        parser.error("with --b-socket, give --a-addr and --b-addr")
    if not args.b_socket and not args.peer:
        parser.error("give --b-socket (two hosts) or --peer (one)")

    def stop(*_):
        raise KeyboardInterrupt

    # SIGTERM ends the drill like Ctrl-C: faults revoked, counters printed.
    signal.signal(signal.SIGTERM, stop)
    clients, held = [], []
    try:
        a = FaultdClient(args.a_socket, "A")
        clients.append(a)
        hello = a.request("hello")
        print(f"A: faultd {hello['version']}, protocol {hello['protocol']}, "
              f"kernel {hello['kernel']}, features {hello['features']}")
        if hello["protocol"] != 1:
            raise SystemExit(f"A speaks protocol {hello['protocol']}; this example speaks 1")
        pairs = [(a, args.dev, args.netns, args.b_addr or args.peer)]
        if args.b_socket:
            b = FaultdClient(args.b_socket, "B")
            clients.append(b)
            b.request("hello")
            pairs.append((b, args.b_dev or args.dev, args.b_netns or args.netns, args.a_addr))
        run = f"remote-drill-{int(time.time())}"
        for client, dev, netns, peer in pairs:
            view = partition(client, dev, netns, args.duration, peer, f"{run}-{client.name}")
            held.append((client, view["id"]))
            print(f"{client.name}: partition {view['id']} from {peer}, leased, "
                  f"{view['remaining_ms'] / 1000:.1f}s left")

        until = time.monotonic() + args.hold
        while time.monotonic() < until:
            time.sleep(min(args.renew_every, max(0.0, until - time.monotonic())))
            for client, fault_id in held:
                view = client.request("renew", fault_id=fault_id, duration=args.duration)
                print(f"{client.name}: renewed {fault_id}; {counters(view)}")
    except KeyboardInterrupt:
        print("interrupted: revoking")
    except (FaultdError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for client, fault_id in held:
            try:
                view = client.request("revoke", fault_id=fault_id)
                print(f"{client.name}: revoked {fault_id}; {counters(view)}")
            except FaultdError as e:
                if e.code != "not_found":  # already gone at its deadline
                    print(f"{client.name}: revoke {fault_id}: {e}", file=sys.stderr)
            except OSError as e:
                # The connection is gone, and with it the lease: faultd revoked the fault.
                print(f"{client.name}: {e}; the lease ended the fault", file=sys.stderr)
        for client in clients:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
