//! Micro-benchmarks of faultd's in-process hot spots: request parse and validation, rule
//! compilation, the prefix-trie model update, netem option encoding and the policy check.
//! Nothing here touches the kernel.
//!
//! Run: `cargo bench -p faultline --bench hot_paths -- --noplot` (about a minute after the
//! build; pass a filter such as `trie` to run a subset).

use std::{
    hint::black_box,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use faultline::{
    abi::PrefixKey,
    fault::{
        plan::{self, PrefixIndex},
        spec::{Action, DurationLimits, FaultSpec, FaultWire},
    },
    kernel::netem::{netem_options_with, Psched},
    policy::Policy,
    proto::{parse_request, Apply, Request},
};

/// A typical apply: loss on one device towards a subnet's database port.
const APPLY_LOSS: &[u8] = br#"{"id":1,"op":"apply","fault":{"target":{"dev":"eth0","match":{"proto":"tcp","dst":["10.0.0.0/24"],"dport":[5432]}},"loss":{"percent":20},"duration":"30s"},"key":"db-loss"}"#;

/// A netem apply: delay with jitter, a distribution and random loss.
const APPLY_NETEM: &[u8] = br#"{"id":2,"op":"apply","fault":{"target":{"dev":"eth0","match":{"dst":["10.0.0.0/24"]}},"netem":{"delay":"100ms","jitter":"10ms","distribution":"normal","loss":{"percent":1}},"duration":"30s"}}"#;

/// Rule compile input: 4 remote CIDRs, 2 local ones, port ranges on both sides.
const WIDE_FAULT: &str = r#"{"target":{"dev":"veth0","direction":"both","match":{"proto":"tcp","src":["10.1.0.0/16","10.2.0.0/16"],"dst":["10.0.0.0/24","10.0.1.0/24","192.168.0.0/16","172.16.5.4"],"sport":["1024-65535"],"dport":[80,443,"9000-9100"]},"flows":0.5},"loss":{"percent":20},"duration":"30s"}"#;

/// netem with delay, jitter, correlated loss and a rate limit; `{DIST}` is the distribution.
const NETEM_FAULT: &str = r#"{"target":{"dev":"eth0"},"netem":{"delay":"100ms","jitter":"10ms","delay_correlation":25,"distribution":"{DIST}","loss":{"percent":1,"correlation":10},"rate":{"rate":"10mbit","packet_overhead":20}},"duration":"30s"}"#;

/// Device globs, 8 protected targets and a weekday window.
const POLICY: &str = r#"
[limits]
max_duration = "10m"
max_loss_percent = 50

[targets]
devices = ["eth*", "ens*", "bond*", "veth*"]

[[protected]]
cidr = "10.255.0.0/16"
proto = "tcp"
ports = "22"

[[protected]]
cidr = "10.254.0.1"

[[protected]]
cidr = "192.168.100.0/24"
proto = "udp"
ports = "53"

[[protected]]
cidr = "172.31.0.0/16"
ports = "2379-2380"

[[protected]]
cidr = "fd00::/8"
ports = "1000-2000"

[[protected]]
cidr = "169.254.169.254"

[[protected]]
cidr = "10.96.0.0/12"
proto = "tcp"
ports = "6443"

[[protected]]
cidr = "fe80::/10"

[[windows]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
utc_offset = "+00:00"
"#;

const LIMITS: DurationLimits = DurationLimits {
    default: None,
    max: Duration::from_secs(3600),
};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

fn fault_wire(line: &[u8]) -> FaultWire {
    match parse_request(line).1 {
        Ok(Request::Apply(Apply { fault, .. })) => *fault,
        other => panic!("not an apply: {other:?}"),
    }
}

fn spec(json: &str) -> FaultSpec {
    let wire: FaultWire = serde_json::from_str(json).expect("wire json");
    FaultSpec::from_wire(&wire, &LIMITS).expect("valid spec")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_request");
    for (name, line) in [("loss", APPLY_LOSS), ("netem", APPLY_NETEM)] {
        fault_wire(line); // must be a valid apply
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| parse_request(black_box(line)))
        });
    }
    group.finish();
}

fn parse_and_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_validate");
    for (name, line) in [("loss", APPLY_LOSS), ("netem", APPLY_NETEM)] {
        FaultSpec::from_wire(&fault_wire(line), &LIMITS).expect("valid spec");
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| match parse_request(black_box(line)).1 {
                Ok(Request::Apply(Apply { fault, .. })) => FaultSpec::from_wire(&fault, &LIMITS),
                _ => unreachable!(),
            })
        });
    }
    group.finish();
}

fn rule_compile(c: &mut Criterion) {
    let spec = spec(WIDE_FAULT);
    assert_eq!(plan::prefix_keys(&spec, 7).len(), 4);
    c.bench_function("rule_compile/4dst_2src_ports", |b| {
        b.iter(|| {
            let spec = black_box(&spec);
            (
                plan::fault_value(spec, 0x9e37_79b9),
                plan::prefix_keys(spec, 7),
            )
        })
    });
}

/// A /32 on device 7 per slot, in 100.64.0.0/10: apart from the benchmarked fault's prefixes.
fn populated_index(faults: u32) -> PrefixIndex {
    let mut index = PrefixIndex::default();
    for slot in 0..faults {
        let mut addr = [0; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&(0x6440_0000 + slot).to_be_bytes());
        let key = PrefixKey {
            attachment: 7,
            addr,
            len: 128,
        };
        index.insert(slot, &[key]).expect("distinct /32s fit");
    }
    index
}

fn trie_update(c: &mut Criterion) {
    let keys = plan::prefix_keys(&spec(WIDE_FAULT), 7);
    let mut group = c.benchmark_group("trie_insert_remove");
    for faults in [1_000u32, 10_000] {
        let mut index = populated_index(faults);
        let slot = faults;
        let inserted = index.insert(slot, &keys).expect("fits");
        assert_eq!(inserted.set.len(), keys.len());
        assert_eq!(index.remove(slot, &keys).delete.len(), keys.len());
        group.bench_function(BenchmarkId::from_parameter(faults), |b| {
            b.iter(|| {
                let set = index.insert(slot, black_box(&keys)).expect("fits");
                let removed = index.remove(slot, black_box(&keys));
                (set, removed)
            })
        });
    }
    group.finish();
}

fn netem_encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("netem_options");
    // `normal` adds the TCA_NETEM_DELAY_DIST table, which `netem_dist::table` generates on
    // every call (milliseconds): fewer samples keep the run short.
    for dist in ["uniform", "normal"] {
        let spec = spec(&NETEM_FAULT.replace("{DIST}", dist));
        let Action::Netem(netem) = spec.action else {
            panic!("not a netem fault");
        };
        if dist != "uniform" {
            group.sample_size(10);
        }
        group.bench_function(BenchmarkId::new("delay_jitter_loss_rate", dist), |b| {
            b.iter(|| netem_options_with(black_box(&netem), &Psched::LINUX))
        });
    }
    group.finish();
}

fn policy_check(c: &mut Criterion) {
    let policy = Policy::parse(POLICY).expect("valid policy");
    assert_eq!(policy.protected().len(), 8);
    let spec = spec(WIDE_FAULT);
    // Monday 2024-01-01 10:00 UTC: inside the window, so every rule is evaluated.
    let now: SystemTime = UNIX_EPOCH + Duration::from_secs(1_704_067_200 + 10 * 3600);
    policy.check_fault(&spec, now).expect("allowed");
    c.bench_function("policy_check_fault", |b| {
        b.iter(|| policy.check_fault(black_box(&spec), black_box(now)))
    });
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = parse, parse_and_validate, rule_compile, trie_update, netem_encoding, policy_check
}
criterion_main!(hot_paths);
