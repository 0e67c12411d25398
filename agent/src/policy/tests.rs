//! The policy's unit tests: parsing, validation messages, and every rule's decisions.

use std::time::UNIX_EPOCH;

use serde_json::{json, Value};

use super::*;
use crate::{
    abi::MAX_PROTECTED,
    fault::spec::{DurationLimits, FaultWire},
};

const FULL: &str = r#"
[limits]
default_duration = "30s"
max_duration = "10m"
max_faults = 100
max_loss_percent = 50

[targets]
devices = ["eth*", "veth*"]
namespaces = ["host", "/run/netns/lab-*", "pid:*"]

[[protected]]
cidr = "10.0.0.0/8"
proto = "tcp"
ports = "22"

[[protected]]
cidr = "fd00::/8"
ports = "1000-2000"

[[protected]]
cidr = "192.168.1.1"

[[windows]]
days = ["mon","tue","wed","thu","fri"]
start = "09:00"
end = "17:00"
utc_offset = "+00:00"

[access]
uids = [0, 1000]
gids = [50]
read_only_uids = [1001]
read_only_gids = [60]
"#;

/// 2024-01-01, a monday, 00:00 UTC.
const MONDAY: u64 = 1_704_067_200;

/// `day` days after monday 2024-01-01 (0 = mon), at hh:mm UTC.
fn utc(day: u64, hour: u64, minute: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(MONDAY + day * 86_400 + hour * 3600 + minute * 60)
}

fn policy(text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| panic!("{text}\n→ {e}"))
}

/// (key, line) of a policy that must be rejected.
fn rejected(text: &str) -> (String, Option<usize>) {
    match Policy::parse(text) {
        Err(PolicyError::Invalid { key, line, .. }) => (key, line),
        other => panic!("{text}\n→ {other:?}"),
    }
}

fn key_of(text: &str) -> String {
    rejected(text).0
}

fn fault(json: &str) -> FaultSpec {
    let wire: FaultWire = serde_json::from_str(json).expect("wire json");
    let limits = DurationLimits {
        default: Some(Duration::from_secs(60)),
        max: Duration::from_secs(86_400),
    };
    FaultSpec::from_wire(&wire, &limits).expect("valid spec")
}

fn loss(percent: u32) -> FaultSpec {
    fault(&format!(
        r#"{{"target":{{"dev":"eth0"}},"loss":{{"percent":{percent}}}}}"#
    ))
}

fn on(netns: Option<&str>, dev: &str) -> FaultSpec {
    let netns = netns.map_or(String::new(), |n| format!(r#","netns":"{n}""#));
    fault(&format!(
        r#"{{"target":{{"dev":"{dev}"{netns}}},"partition":{{}}}}"#
    ))
}

fn rule(policy: &Policy, spec: &FaultSpec, now: SystemTime) -> Option<String> {
    policy.check_fault(spec, now).err().map(|v| v.rule)
}

#[test]
fn full_example_parses_into_typed_values() {
    let p = policy(FULL);
    assert_eq!(
        p.durations(),
        (
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(600))
        )
    );
    assert_eq!(p.max_faults(), Some(100));
    assert_eq!(p.max_loss.map(Percent::value), Some(50.0));
    let protected = p.protected();
    assert_eq!(protected.len(), 3);
    assert_eq!(protected[0].cidr.to_string(), "10.0.0.0/8");
    assert_eq!(protected[0].proto, Some(Proto::Tcp));
    assert_eq!(
        protected[0].ports.map(|r| (r.first(), r.last())),
        Some((22, 22))
    );
    assert_eq!(protected[1].proto, None);
    assert_eq!(
        protected[1].ports.map(|r| r.to_string()),
        Some("1000-2000".into())
    );
    assert_eq!(protected[2].cidr.to_string(), "192.168.1.1/32");
    assert_eq!(protected[2].ports, None);
    assert_eq!(
        p.windows,
        vec![Window {
            days: 0b001_1111,
            start: 9 * 60,
            end: 17 * 60,
            offset_secs: 0
        }]
    );
    assert_eq!(p.file(), None);
}

#[test]
fn deployed_example_parses() {
    let p = policy(include_str!("../../../deploy/faultd.toml"));
    assert_eq!(p.max_duration, Some(Duration::from_secs(600)));
    assert!(p
        .protected()
        .iter()
        .all(|t| t.ports.map(PortRange::first) == Some(22)));
}

#[test]
fn empty_policy_restricts_nothing() {
    let p = policy("");
    assert_eq!(p.durations(), (None, None));
    assert_eq!(p.max_faults(), None);
    assert!(p.protected().is_empty());
    assert_eq!(p.access(1234, &[]), Access::Full);
    let burst = fault(r#"{"target":{"dev":"wlan0","netns":"x"},"loss":{"burst":{"p":1,"r":5}}}"#);
    assert_eq!(p.check_fault(&burst, utc(5, 3, 0)), Ok(()));
    let s = p.summary();
    assert_eq!(s.limits.max_duration, None);
    assert_eq!(s.targets.devices, None);
    assert_eq!(s.access, None);
    assert!(s.windows.is_empty());
}

#[test]
fn unknown_keys_are_named() {
    assert_eq!(
        rejected("[limits]\nmax_fualts = 3\n"),
        ("limits.max_fualts".into(), Some(2))
    );
    assert_eq!(key_of("[limit]\nmax_faults = 3\n"), "limit");
    assert_eq!(
        key_of("[[protected]]\ncidr = \"10.0.0.0/8\"\n[[protected]]\ncidr = \"::/0\"\nport = 22\n"),
        "protected[1].port"
    );
    assert_eq!(
        key_of("[[windows]]\nstart=\"09:00\"\nend=\"10:00\"\ntz=\"CET\"\n"),
        "windows[0].tz"
    );
    assert_eq!(key_of("[access]\nuid = [0]\n"), "access.uid");
    assert_eq!(key_of("[targets]\ndevice = [\"eth0\"]\n"), "targets.device");
    let message = Policy::parse("[limits]\nmax_fualts = 3\n")
        .expect_err("unknown")
        .to_string();
    assert!(
        message.contains("max_fualts") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn wrong_types_and_syntax_are_rejected() {
    assert_eq!(
        rejected("[limits]\nmax_faults = -3\n"),
        ("limits.max_faults".into(), Some(2))
    );
    assert_eq!(
        key_of("[limits]\nmax_duration = 30\n"),
        "limits.max_duration"
    );
    assert_eq!(key_of("[access]\nuids = [\"root\"]\n"), "access.uids[0]");
    match Policy::parse("[limits]\nmax_faults = 1\n[limits\n") {
        Err(PolicyError::Syntax { line, .. }) => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_values_are_rejected_with_their_key() {
    let cases = [
        (
            "[limits]\nmax_loss_percent = 150",
            "limits.max_loss_percent",
        ),
        ("[limits]\nmax_loss_percent = 0", "limits.max_loss_percent"),
        (
            "[limits]\nmax_duration = \"10 parsecs\"",
            "limits.max_duration",
        ),
        ("[limits]\nmax_duration = \"0s\"", "limits.max_duration"),
        (
            "[limits]\ndefault_duration = \"1h\"\nmax_duration = \"10m\"",
            "limits.default_duration",
        ),
        ("[limits]\nmax_faults = 0", "limits.max_faults"),
        (
            "[targets]\ndevices = [\"eth0\", \"eth[\"]",
            "targets.devices[1]",
        ),
        ("[targets]\ndevices = [\"eth[z-a]\"]", "targets.devices[0]"),
        ("[targets]\ndevices = [\"eth\\\\\"]", "targets.devices[0]"),
        ("[targets]\ndevices = []", "targets.devices"),
        ("[targets]\nnamespaces = [\"\"]", "targets.namespaces[0]"),
        ("[[protected]]\ncidr = \"10.0.0.1/8\"", "protected[0].cidr"),
        ("[[protected]]\ncidr = \"10.0.0.0/33\"", "protected[0].cidr"),
        (
            "[[protected]]\ncidr = \"::/0\"\nproto = \"sctp\"",
            "protected[0].proto",
        ),
        (
            "[[protected]]\ncidr = \"::/0\"\nports = \"0\"",
            "protected[0].ports",
        ),
        (
            "[[protected]]\ncidr = \"::/0\"\nports = 70000",
            "protected[0].ports",
        ),
        (
            "[[protected]]\ncidr = \"::/0\"\nproto = \"icmp\"\nports = 7",
            "protected[0].ports",
        ),
        (
            "[[windows]]\nstart = \"25:00\"\nend = \"10:00\"",
            "windows[0].start",
        ),
        (
            "[[windows]]\nstart = \"24:00\"\nend = \"10:00\"",
            "windows[0].start",
        ),
        (
            "[[windows]]\nstart = \"9\"\nend = \"10:00\"",
            "windows[0].start",
        ),
        (
            "[[windows]]\nstart = \"09:00\"\nend = \"10:60\"",
            "windows[0].end",
        ),
        (
            "[[windows]]\nstart = \"09:00\"\nend = \"9:00\"",
            "windows[0].end",
        ),
        (
            "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\ndays = [\"funday\"]",
            "windows[0].days",
        ),
        (
            "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\ndays = []",
            "windows[0].days",
        ),
        (
            "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\nutc_offset = \"CET\"",
            "windows[0].utc_offset",
        ),
        (
            "[[windows]]\nstart = \"09:00\"\nend = \"10:00\"\nutc_offset = \"+24:00\"",
            "windows[0].utc_offset",
        ),
        ("[[windows]]\nstart = \"09:00\"", "windows[0]"),
        (
            "[access]\nuids = [1000]\nread_only_uids = [1000]",
            "access.read_only_uids",
        ),
        (
            "[access]\ngids = [7]\nread_only_gids = [7]",
            "access.read_only_gids",
        ),
    ];
    for (text, key) in cases {
        assert_eq!(key_of(text), key, "{text}");
    }
    let message = Policy::parse("[[protected]]\ncidr = \"10.0.0.1/8\"")
        .expect_err("host bits")
        .to_string();
    assert_eq!(
        message,
        "policy: protected[0].cidr: 10.0.0.1/8 has host bits set; the network is 10.0.0.0/8"
    );
}

#[test]
fn protected_list_fits_the_datapath() {
    let entry = "[[protected]]\ncidr = \"10.0.0.0/8\"\n";
    assert_eq!(
        policy(&entry.repeat(MAX_PROTECTED)).protected().len(),
        MAX_PROTECTED
    );
    assert_eq!(key_of(&entry.repeat(MAX_PROTECTED + 1)), "protected");
}

#[test]
fn devices_and_namespaces() {
    let p = policy(
        "[targets]\ndevices = [\"eth*\", \"veth*\"]\n\
         namespaces = [\"host\", \"/run/netns/lab-*\", \"pid:*\"]",
    );
    let now = utc(0, 12, 0);
    assert_eq!(rule(&p, &on(None, "eth0"), now), None);
    assert_eq!(
        rule(&p, &on(None, "wlan0"), now).as_deref(),
        Some("targets.devices")
    );
    for allowed in ["lab-a", "/run/netns/lab-b", "pid:42", "/proc/42/ns/net"] {
        assert_eq!(
            rule(&p, &on(Some(allowed), "veth0"), now),
            None,
            "{allowed}"
        );
    }
    for refused in [
        "prod",
        "/run/netns/prod",
        "/run/netns/lab-a/../../../proc/1/ns/net",
        "/run/netns/./lab-a",
        "/run//netns/lab-a",
        "/var/run/netns/lab-a",
    ] {
        assert_eq!(
            rule(&p, &on(Some(refused), "veth0"), now).as_deref(),
            Some("targets.namespaces"),
            "{refused}"
        );
    }
    // "host" is faultd's own namespace, not one named host; and a glob never matches it.
    let p = policy("[targets]\nnamespaces = [\"host\"]");
    assert_eq!(
        rule(&p, &on(Some("host"), "eth0"), now).as_deref(),
        Some("targets.namespaces")
    );
    let p = policy("[targets]\nnamespaces = [\"*\"]");
    assert_eq!(
        rule(&p, &on(None, "eth0"), now).as_deref(),
        Some("targets.namespaces")
    );
    assert_eq!(rule(&p, &on(Some("host"), "eth0"), now), None);
    let v = p
        .check_fault(&on(None, "eth0"), now)
        .expect_err("host not allowed");
    assert_eq!(v.message, r#"namespace "host" is not one of *"#);
}

#[test]
fn loss_maximum_covers_every_loss_model() {
    let p = policy("[limits]\nmax_loss_percent = 50");
    let now = utc(0, 0, 0);
    let target = r#""target":{"dev":"eth0"}"#;
    let allowed = [
        r#""loss":{"percent":50}"#,
        r#""loss":{"burst":{"p":1,"r":10,"loss_bad":40}}"#,
        r#""netem":{"loss":{"percent":10}}"#,
        r#""netem":{"delay":"100ms"}"#,
        r#""netem":{"loss":{"burst":{"p":1,"r":10,"loss_bad":50,"loss_good":1}}}"#,
        r#""partition":{}"#,
        r#""corrupt":{"percent":100}"#,
        r#""corrupt":{"percent":50,"checksum":"broken"}"#,
    ];
    for action in allowed {
        assert_eq!(
            rule(&p, &fault(&format!("{{{target},{action}}}")), now),
            None,
            "{action}"
        );
    }
    let refused = [
        r#""loss":{"percent":50.5}"#,
        r#""loss":{"burst":{"p":1,"r":10}}"#,
        r#""loss":{"burst":{"p":1,"r":10,"loss_bad":10,"loss_good":60}}"#,
        r#""netem":{"delay":"10ms","loss":{"percent":60}}"#,
        r#""netem":{"loss":{"burst":{"p":1,"r":10,"loss_bad":90}}}"#,
        r#""netem":{"loss":{"state4":{"p13":1}}}"#,
        r#""corrupt":{"percent":60,"checksum":"broken"}"#,
    ];
    for action in refused {
        assert_eq!(
            rule(&p, &fault(&format!("{{{target},{action}}}")), now).as_deref(),
            Some("limits.max_loss_percent"),
            "{action}"
        );
    }
    let v = p.check_fault(&loss(60), now).expect_err("too much");
    assert_eq!(
        v.to_string(),
        "limits.max_loss_percent: loss of 60% exceeds the maximum of 50%"
    );
}

#[test]
fn duration_maximum() {
    let p = policy("[limits]\nmax_duration = \"10m\"");
    let spec = |d: &str| {
        fault(&format!(
            r#"{{"target":{{"dev":"eth0"}},"partition":{{}},"duration":"{d}"}}"#
        ))
    };
    assert_eq!(rule(&p, &spec("10m"), utc(0, 0, 0)), None);
    let v = p
        .check_fault(&spec("11m"), utc(0, 0, 0))
        .expect_err("too long");
    assert_eq!(v.rule, "limits.max_duration");
    assert_eq!(v.message, "11m exceeds the maximum of 10m");
}

#[test]
fn weekday_windows() {
    let p = policy(
        "[[windows]]\ndays = [\"mon\",\"Tuesday\",\"wed\",\"thu\",\"fri\"]\n\
         start = \"09:00\"\nend = \"17:00\"",
    );
    let spec = loss(1);
    assert_eq!(rule(&p, &spec, utc(0, 9, 0)), None);
    assert_eq!(rule(&p, &spec, utc(4, 16, 59)), None);
    for (day, h, m) in [(0, 8, 59), (0, 17, 0), (5, 10, 0), (6, 12, 0), (7, 3, 0)] {
        assert_eq!(
            rule(&p, &spec, utc(day, h, m)).as_deref(),
            Some("windows"),
            "{day} {h}:{m}"
        );
    }
    let v = p.check_fault(&spec, utc(5, 10, 7)).expect_err("saturday");
    assert_eq!(
        v.message,
        "faults are allowed only mon,tue,wed,thu,fri 09:00-17:00 +00:00; it is now sat 10:07 +00:00"
    );
    // A second window adds to the first.
    let p = policy(
        "[[windows]]\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\n\
         [[windows]]\ndays = [\"sat\"]\nstart = \"00:00\"\nend = \"24:00\"",
    );
    assert_eq!(rule(&p, &spec, utc(5, 0, 0)), None);
    assert_eq!(rule(&p, &spec, utc(5, 23, 59)), None);
    assert_eq!(rule(&p, &spec, utc(6, 0, 0)).as_deref(), Some("windows"));
}

#[test]
fn windows_may_wrap_midnight() {
    let p = policy("[[windows]]\ndays = [\"fri\"]\nstart = \"22:00\"\nend = \"06:00\"");
    let spec = loss(1);
    assert_eq!(rule(&p, &spec, utc(4, 22, 0)), None, "fri evening");
    assert_eq!(
        rule(&p, &spec, utc(5, 5, 59)),
        None,
        "sat morning belongs to fri"
    );
    assert_eq!(rule(&p, &spec, utc(5, 6, 0)).as_deref(), Some("windows"));
    assert_eq!(
        rule(&p, &spec, utc(4, 5, 0)).as_deref(),
        Some("windows"),
        "thu's night"
    );
    assert_eq!(
        rule(&p, &spec, utc(5, 22, 30)).as_deref(),
        Some("windows"),
        "sat evening"
    );
    // Every day: sunday night runs into monday morning.
    let p = policy("[[windows]]\nstart = \"22:00\"\nend = \"06:00\"");
    assert_eq!(rule(&p, &spec, utc(7, 1, 0)), None);
    assert_eq!(rule(&p, &spec, utc(7, 12, 0)).as_deref(), Some("windows"));
}

#[test]
fn windows_use_their_offset() {
    let p = policy(
        "[[windows]]\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\nutc_offset = \"+02:00\"",
    );
    let spec = loss(1);
    assert_eq!(rule(&p, &spec, utc(0, 7, 30)), None, "09:30 local");
    assert_eq!(
        rule(&p, &spec, utc(0, 15, 30)).as_deref(),
        Some("windows"),
        "17:30 local"
    );
    // UTC tuesday 01:30 is monday 20:30 at -05:00.
    let p = policy(
        "[[windows]]\ndays = [\"mon\"]\nstart = \"20:00\"\nend = \"23:00\"\nutc_offset = \"-05:00\"",
    );
    assert_eq!(rule(&p, &spec, utc(1, 1, 30)), None);
    assert_eq!(rule(&p, &spec, utc(0, 21, 0)).as_deref(), Some("windows"));
    let v = p
        .check_fault(&spec, utc(0, 21, 0))
        .expect_err("16:00 local");
    assert!(
        v.message.ends_with("it is now mon 16:00 -05:00"),
        "{}",
        v.message
    );
}

#[test]
fn access_decisions() {
    let absent = policy("[limits]\nmax_faults = 5");
    assert_eq!(
        absent.access(1000, &[1000]),
        Access::Full,
        "socket mode is the gate"
    );
    let p = policy(FULL);
    assert_eq!(p.access(0, &[]), Access::Full);
    assert_eq!(p.access(1000, &[]), Access::Full);
    assert_eq!(p.access(2000, &[7, 50]), Access::Full);
    assert_eq!(p.access(1001, &[]), Access::ReadOnly);
    assert_eq!(p.access(2000, &[60]), Access::ReadOnly);
    assert_eq!(
        p.access(1001, &[50]),
        Access::Full,
        "full group outranks read-only uid"
    );
    assert_eq!(p.access(2000, &[2000]), Access::Denied);
    let only_root = policy("[access]");
    assert_eq!(only_root.access(0, &[]), Access::Full);
    assert_eq!(
        only_root.access(1, &[0]),
        Access::Denied,
        "gid 0 is not uid 0"
    );
}

#[test]
fn summary_renders_the_policy() {
    // As the wire has it.
    let s = serde_json::to_value(policy(FULL).summary()).expect("json");
    assert_eq!(
        s["limits"],
        json!({"default_duration": "30s", "max_duration": "10m", "max_faults": 100,
               "max_loss_percent": 50.0})
    );
    assert_eq!(
        s["targets"],
        json!({"devices": ["eth*", "veth*"], "namespaces": ["host", "/run/netns/lab-*", "pid:*"]})
    );
    assert_eq!(
        s["protected"][0],
        json!({"cidr": "10.0.0.0/8", "proto": "tcp", "ports": "22"})
    );
    assert_eq!(
        s["protected"][2],
        json!({"cidr": "192.168.1.1/32", "proto": null, "ports": null})
    );
    assert_eq!(
        s["windows"][0],
        json!({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00",
               "utc_offset": "+00:00"})
    );
    assert_eq!(s["access"]["read_only_gids"], json!([60]));
    assert_eq!(s["file"], Value::Null);
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("faultline-policy-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.toml");
    fs::write(&good, "[limits]\nmax_faults = 3\n").expect("write");
    let p = Policy::load(&good).expect("loads");
    assert_eq!(p.max_faults(), Some(3));
    assert_eq!(p.file(), Some(good.as_path()));
    assert_eq!(p.summary().file, Some(good.display().to_string()));

    let bad = dir.join("bad.toml");
    fs::write(&bad, "[limits]\nmax_faults = 3\nmax_loss = 5\n").expect("write");
    let message = Policy::load(&bad).expect_err("unknown key").to_string();
    assert!(
        message.starts_with(&format!(
            "{}: limits.max_loss: unknown field",
            bad.display()
        )),
        "{message}"
    );
    assert!(message.ends_with("(line 3)"), "{message}");

    let missing = dir.join("missing.toml");
    assert!(matches!(
        Policy::load(&missing),
        Err(PolicyError::Read { .. })
    ));
    let default = Policy::load_or_default(&missing).expect("absent file is no policy");
    assert_eq!(default.max_faults(), None);
    assert!(matches!(
        Policy::load_or_default(&bad),
        Err(PolicyError::Invalid { .. })
    ));
    fs::remove_dir_all(&dir).expect("clean up");
}
