"""The pytest plugin (entry point `pytest11: faultd`): the `chaos` marker, options, and the fixtures
`faultd` (session: faultd reachable, hello checked), `network_fault_injector` and
`recovery_timer`.

Each option comes from the command line, else the environment, else the ini file
(`[pytest]`/`[tool.pytest.ini_options]`), else its default; see `OPTIONS`. Counters and recovery
figures go into each test's user_properties, so `--junitxml` records them, and with a report
directory each test's recovery timers become drill reports plus a summary.json
(docs/drills.md), one scorecard with scripts/drill.sh's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from . import PROTOCOL, pytest_hooks
from .client import Client, Endpoint
from .errors import FaultlineError, UnsupportedError
from .injector import DEFAULT_HOLD_S, NetworkFaultInjector
from .recovery import DEFAULT_RTO_S, RecoveryTimer, observe_timers, set_default_rto
from .report import drill_summary, target_flags, utc_now, write_json


@dataclass(frozen=True)
class Option:
    name: str  # --faultd-NAME, ini faultd_NAME
    env: str
    help: str
    flag: bool = False


OPTIONS = (
    Option("socket", "FAULTLINE_SOCKET", "faultd's socket (default /run/faultline/faultd.sock); "
           "with --faultd-ssh, the path on that host"),
    Option("ssh", "FAULTLINE_SSH_DESTINATION", "[USER@]HOST: reach that host's faultd through "
           "an ssh-forwarded socket, as faultctl --ssh does (program: $FAULTLINE_SSH or ssh)"),
    Option("dev", "FAULTLINE_DEV", "the target's network device"),
    Option("netns", "FAULTLINE_NETNS", "the target's network namespace (name, path or pid:N)"),
    Option("peer", "FAULTLINE_PEER", "the peer's addresses or CIDRs, comma-separated (default: "
           "every packet on the device)"),
    Option("peer-ports", "FAULTLINE_PEER_PORTS", "the peer's ports or ranges, comma-separated"),
    Option("proto", "FAULTLINE_PROTO", "tcp, udp, icmp, icmpv6 or any"),
    Option("rto", "FAULTLINE_RTO", f"recovery time objective, seconds (default {DEFAULT_RTO_S:g})"),
    Option("report-dir", "FAULTLINE_REPORT_DIR", "write a drill report per recovery timer and "
           "a summary.json here"),
    Option("hold", "FAULTLINE_HOLD", "deadline of latency and loss blocks, seconds (default "
           f"{DEFAULT_HOLD_S:g}); the block ends them sooner"),
    Option("skip-unsupported", "FAULTLINE_SKIP_UNSUPPORTED", "skip, instead of fail, a test "
           "needing a fault this kernel cannot do (1/true/yes in the environment)", flag=True),
)


@dataclass(frozen=True)
class Settings:
    socket: Optional[str]
    ssh: Optional[str]
    dev: Optional[str]
    netns: Optional[str]
    peer: Tuple[str, ...]
    peer_ports: Tuple[str, ...]
    proto: Optional[str]
    rto_s: float
    report_dir: Optional[str]
    hold_s: float
    skip_unsupported: bool


def pytest_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(pytest_hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faultd", "network faults through faultline's faultd")
    for o in OPTIONS:
        dest = "faultd_" + o.name.replace("-", "_")
        where = f"[env {o.env}, ini {dest}]"
        if o.flag:
            group.addoption(f"--faultd-{o.name}", dest=dest, action="store_true", default=None,
                            help=f"{o.help} {where}")
            parser.addini(dest, o.help, type="bool", default=None)
        else:
            group.addoption(f"--faultd-{o.name}", dest=dest, default=None,
                            help=f"{o.help} {where}")
            parser.addini(dest, o.help, default=None)


def _value(config: pytest.Config, o: Option) -> Any:
    dest = "faultd_" + o.name.replace("-", "_")
    given = config.getoption(dest)
    if given is not None:
        return given
    env = os.environ.get(o.env)
    if env:
        return env.strip().lower() in ("1", "true", "yes", "on") if o.flag else env
    return config.getini(dest) or None


def settings(config: pytest.Config) -> Settings:
    def text(name: str) -> Optional[str]:
        value = _value(config, next(o for o in OPTIONS if o.name == name))
        return None if value is None else str(value)

    def items(name: str) -> Tuple[str, ...]:
        return tuple(v.strip() for v in (text(name) or "").split(",") if v.strip())

    def seconds(name: str, default: float) -> float:
        value = text(name)
        try:
            return default if value is None else float(value)
        except ValueError:
            raise pytest.UsageError(f"--faultd-{name}: {value!r} is not a number of seconds")

    skip = _value(config, next(o for o in OPTIONS if o.name == "skip-unsupported"))
    return Settings(socket=text("socket"), ssh=text("ssh"), dev=text("dev"), netns=text("netns"),
                    peer=items("peer"), peer_ports=items("peer-ports"), proto=text("proto"),
                    rto_s=seconds("rto", DEFAULT_RTO_S), report_dir=text("report-dir"),
                    hold_s=seconds("hold", DEFAULT_HOLD_S), skip_unsupported=bool(skip))


_SETTINGS = pytest.StashKey[Settings]()
_PREVIOUS_RTO = pytest.StashKey[float]()
_REPORTS = pytest.StashKey[List[Tuple[str, Dict[str, Any]]]]()
_STARTED = pytest.StashKey[Any]()
_INJECTOR = pytest.StashKey[NetworkFaultInjector]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: a resilience test that injects network faults through faultd")
    config.stash[_SETTINGS] = s = settings(config)
    # RecoveryTimer() made anywhere in the run (a test's own helper module included) gets the
    # configured RTO.
    config.stash[_PREVIOUS_RTO] = set_default_rto(s.rto_s)
    config.stash[_REPORTS] = []
    config.stash[_STARTED] = utc_now()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS_RTO in config.stash:
        set_default_rto(config.stash[_PREVIOUS_RTO])


@pytest.fixture(scope="session")
def faultd(pytestconfig: pytest.Config) -> Iterator[Client]:
    """A connection to faultd, checked with hello (reachable, protocol 1)."""
    s = pytestconfig.stash[_SETTINGS]
    endpoint = Endpoint(s.socket, ssh=s.ssh)
    try:
        client = endpoint.connect()
        hello = client.hello()
    except FaultlineError as e:
        endpoint.close()
        pytest.fail(f"faultd: {e} (set --faultd-socket, FAULTLINE_SOCKET or faultd_socket)",
                    pytrace=False)
    if hello.protocol != PROTOCOL:
        client.close()
        endpoint.close()
        pytest.fail(f"faultd {hello.version} speaks protocol {hello.protocol}; this client "
                    f"speaks {PROTOCOL}", pytrace=False)
    yield client
    client.close()
    endpoint.close()


@pytest.fixture
def network_fault_injector(request: pytest.FixtureRequest,
                           faultd: Client) -> Iterator[NetworkFaultInjector]:
    """Faults for `with` blocks on the configured target (--faultd-dev, -netns, -peer, ...)."""
    s = request.config.stash[_SETTINGS]
    if not s.dev:
        pytest.fail("network_fault_injector needs a target device: --faultd-dev, FAULTLINE_DEV "
                    "or faultd_dev (and usually --faultd-peer)", pytrace=False)
    item = request.node
    hook = request.config.hook

    def unsupported(refusal: UnsupportedError) -> None:
        pytest.skip(f"faultd: {refusal.message}")

    injector = NetworkFaultInjector(
        s.dev, peer=s.peer, netns=s.netns, proto=s.proto, peer_ports=s.peer_ports,
        endpoint=faultd.endpoint, label=f"pytest {item.nodeid}"[:200], hold_s=s.hold_s,
        on_applied=lambda f: hook.pytest_faultd_fault_applied(fault=f, item=item),
        on_ended=lambda f: hook.pytest_faultd_fault_ended(fault=f, item=item),
        on_unsupported=unsupported if s.skip_unsupported else None)
    item.stash[_INJECTOR] = injector
    yield injector
    for n, f in enumerate(injector.faults):
        view = f.view
        c = view.counters
        for name, value in (("id", view.id), ("kind", f.kind), ("state", view.state),
                            ("held_s", round(f.held_s, 3)),
                            ("egress_matched_packets", c.egress.matched_packets),
                            ("egress_dropped_packets", c.egress.dropped_packets),
                            ("ingress_matched_packets", c.ingress.matched_packets),
                            ("ingress_dropped_packets", c.ingress.dropped_packets)):
            item.user_properties.append((f"faultd.{n}.{name}", value))
    injector.close()


@pytest.fixture
def recovery_timer(request: pytest.FixtureRequest) -> Iterator[RecoveryTimer]:
    """A RecoveryTimer with the configured RTO. Every RecoveryTimer whose block ends during the
    test (this one, or one the test made itself) is recorded: its figures in the test's
    user_properties, and with --faultd-report-dir a drill report."""
    s = request.config.stash[_SETTINGS]
    timers: List[RecoveryTimer] = []
    timer = RecoveryTimer(s.rto_s)
    with observe_timers(timers.append):
        yield timer
    if timer.used and timer not in timers:
        timers.append(timer)  # marked without a `with` block
    item = request.node
    injector = item.stash.get(_INJECTOR, None)
    faults = injector.faults if injector else []
    kinds = sorted({f.kind for f in faults})
    for n, t in enumerate(timers, 1):
        m = t.metrics
        prefix = "recovery." if len(timers) == 1 else f"recovery.{n}."
        for name, value in (("detection_s", m.detection_s), ("recovery_s", m.recovery_s),
                            ("rto_s", m.rto_s), ("meets_rto", m.meets_rto),
                            ("verdict", m.verdict)):
            item.user_properties.append((prefix + name, value))
        if s.report_dir:
            scenario = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")
            scenario += "" if n == 1 else f"-{n}"
            report = t.report(scenario, kind=kinds[0] if len(kinds) == 1 else
                              ("combined" if kinds else ""),
                              target=" ".join(target_flags(injector.target)) if injector else "",
                              faults=faults, duration_s=max((f.held_s for f in faults),
                                                            default=0.0))
            path = os.path.join(s.report_dir, scenario + ".json")
            write_json(path, report)
            request.config.stash[_REPORTS].append((path, report))


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    s = config.stash.get(_SETTINGS, None)
    reports = config.stash.get(_REPORTS, [])
    if s is None or not s.report_dir or not reports:
        return
    target = " ".join(filter(None, (s.netns and f"--netns {s.netns}", s.dev and f"--dev {s.dev}",
                                    *(f"--dst {p}" for p in s.peer))))
    summary = drill_summary([r for _, r in reports], started_at=config.stash[_STARTED],
                            ended_at=utc_now(), mode="pytest", rto_s=s.rto_s, target=target,
                            files=[p for p, _ in reports])
    write_json(os.path.join(s.report_dir, "summary.json"), summary)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash.get(_REPORTS, [])
    if not reports:
        return
    tr = terminalreporter
    tr.section("recovery scorecard (faultd)")
    tr.write_line(f"{'SCENARIO':40} {'DETECTED':>10} {'RECOVERED':>10} {'RTO':>6}  VERDICT")
    for _, r in reports:
        m, v = r["metrics"], r["validation"]
        shown = ["-" if x is None else f"{x:.3f}s" for x in (m["detection_s"], m["recovery_s"])]
        tr.write_line(f"{r['scenario'][:40]:40} {shown[0]:>10} {shown[1]:>10} "
                      f"{v['rto_s']:>5g}s  {v['verdict']}")
