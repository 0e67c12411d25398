//! Checks the `#[repr(C)]` mirrors against the BTF that clang wrote for `ebpf/include/faultline.h`.

use std::{collections::HashMap, mem::offset_of};

use object::{Object, ObjectSection};

use super::*;

const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/faults.bpf.o"));

/// Struct name → (size, [(member name, byte offset)]), read from the object's `.BTF` section.
fn btf_structs() -> HashMap<String, (u32, Vec<(String, u32)>)> {
    let elf = object::File::parse(OBJECT).expect("faults.bpf.o is an ELF object");
    let btf = elf
        .section_by_name(".BTF")
        .expect("object has .BTF")
        .data()
        .expect("readable .BTF");
    let u32_at = |off: usize| u32::from_le_bytes(btf[off..off + 4].try_into().expect("4 bytes"));
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(4) as usize;
    let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
    let str_off = u32_at(16) as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name = |off: u32| -> String {
        let start = strings + off as usize;
        let end = btf[start..].iter().position(|&b| b == 0).expect("NUL") + start;
        String::from_utf8_lossy(&btf[start..end]).into_owned()
    };

    let mut structs = HashMap::new();
    let mut at = types;
    while at < types + type_len {
        let (name_off, info, size) = (u32_at(at), u32_at(at + 4), u32_at(at + 8));
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,             // int, var, decl_tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
            6 | 13 => 8 * vlen,           // enum, func_proto
            _ => 0,
        };
        if kind == 4 {
            let members = (0..vlen)
                .map(|i| {
                    let m = at + 12 * i;
                    (name(u32_at(m)), (u32_at(m + 8) & 0x00ff_ffff) / 8)
                })
                .collect();
            structs.insert(name(name_off), (size, members));
        }
        at += extra;
    }
    structs
}

macro_rules! assert_layout {
    ($btf:expr, $c_name:literal, $ty:ty, { $($c_field:literal => $field:ident),* $(,)? }) => {{
        let (size, members) = $btf.get($c_name).unwrap_or_else(|| panic!("{} not in BTF", $c_name));
        assert_eq!(*size as usize, size_of::<$ty>(), "size of {}", $c_name);
        let expected: Vec<(String, u32)> =
            vec![$(($c_field.to_owned(), offset_of!($ty, $field) as u32)),*];
        assert_eq!(members, &expected, "fields of {}", $c_name);
    }};
}

#[test]
fn rust_mirrors_match_the_compiled_btf() {
    let btf = btf_structs();
    assert_layout!(btf, "fl_cidr", FlCidr, { "addr" => addr, "mask" => mask });
    assert_layout!(btf, "fl_port_range", FlPortRange, { "first" => first, "last" => last });
    assert_layout!(btf, "fl_match", FlMatch, {
        "hooks" => hooks, "proto" => proto, "local_cidr_count" => local_cidr_count,
        "local_port_count" => local_port_count, "remote_port_count" => remote_port_count,
        "connections" => connections, "pad" => pad, "flow_threshold" => flow_threshold, "flow_seed" => flow_seed,
        "local" => local, "local_ports" => local_ports, "remote_ports" => remote_ports,
    });
    assert_layout!(btf, "fl_action", FlAction, {
        "kind" => kind, "loss_threshold" => loss_threshold, "burst_enter" => burst_enter,
        "burst_exit" => burst_exit, "burst_loss_bad" => burst_loss_bad,
        "burst_loss_good" => burst_loss_good, "class_id" => class_id,
        "flags" => flags, "corrupt_threshold" => corrupt_threshold,
        "corrupt_bits" => corrupt_bits, "stall_bytes" => stall_bytes, "pad" => pad,
    });
    assert_layout!(btf, "fl_fault", FlFault, {
        "deadline_ns" => deadline_ns, "match" => match_, "action" => action,
        "burst_bad" => burst_bad, "pad" => pad,
    });
    assert_layout!(btf, "fl_counters", FlCounters, {
        "matched_packets" => matched_packets, "matched_bytes" => matched_bytes,
        "dropped_packets" => dropped_packets, "dropped_bytes" => dropped_bytes,
    });
    assert_layout!(btf, "fl_action_counters", FlActionCounters, {
        "resets_sent" => resets_sent, "rejects_sent" => rejects_sent,
        "corrupted_packets" => corrupted_packets, "allowed_bytes" => allowed_bytes,
    });
    assert_layout!(btf, "fl_conn_key", FlConnKey, {
        "slot" => slot, "local_port" => local_port, "remote_port" => remote_port,
        "local" => local, "remote" => remote,
    });
    assert_layout!(btf, "fl_conn", FlConn, {
        "flags" => flags, "budget_end" => budget_end, "allowed_end" => allowed_end, "pad" => pad,
    });
    assert_layout!(btf, "fl_candidates", FlCandidates, { "count" => count, "slots" => slots });
    assert_layout!(btf, "fl_protected", FlProtected, {
        "cidr" => cidr, "ports" => ports, "proto" => proto, "pad" => pad,
    });
    assert_layout!(btf, "fl_protected_list", FlProtectedList, {
        "count" => count, "entries" => entries,
    });
    let (key_size, key_members) = &btf["fl_prefix_key"];
    assert_eq!(
        *key_size as usize,
        4 + size_of::<FlPrefixData>(),
        "size of fl_prefix_key"
    );
    assert_eq!(
        key_members,
        &vec![
            ("prefix_len".to_owned(), 0),
            (
                "attachment".to_owned(),
                4 + offset_of!(FlPrefixData, attachment) as u32
            ),
            ("addr".to_owned(), 4 + offset_of!(FlPrefixData, addr) as u32),
        ]
    );
}

#[test]
fn rust_constants_match_the_header() {
    const HEADER: &str = include_str!("../../ebpf/include/faultline.h");
    let define = |name: &str| -> u64 {
        HEADER
            .lines()
            .find_map(|line| line.strip_prefix(&format!("#define {name} ")))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} not defined as a number in faultline.h"))
    };
    assert_eq!(define("FL_MAX_FAULTS"), u64::from(DEFAULT_FAULT_SLOTS));
    assert_eq!(define("FL_MAX_PREFIXES"), u64::from(MAX_PREFIXES));
    assert_eq!(define("FL_MAX_CANDIDATES"), MAX_CANDIDATES as u64);
    assert_eq!(define("FL_MAX_LOCAL_CIDRS"), MAX_LOCAL_CIDRS as u64);
    assert_eq!(define("FL_MAX_PORT_RANGES"), MAX_PORT_RANGES as u64);
    assert_eq!(define("FL_MAX_PROTECTED"), MAX_PROTECTED as u64);
    assert_eq!(define("FL_MAX_CONNS"), u64::from(MAX_CONNS));
    assert_eq!(define("FL_MAX_CORRUPT_BITS"), u64::from(MAX_CORRUPT_BITS));
    assert_eq!(define("FL_DIR_EGRESS"), DIR_EGRESS as u64);
    assert_eq!(define("FL_DIR_INGRESS"), DIR_INGRESS as u64);
    assert_eq!(define("FL_ACTION_PARTITION"), u64::from(ACTION_PARTITION));
    assert_eq!(define("FL_ACTION_LOSS"), u64::from(ACTION_LOSS));
    assert_eq!(define("FL_ACTION_BURST_LOSS"), u64::from(ACTION_BURST_LOSS));
    assert_eq!(define("FL_ACTION_DELAY"), u64::from(ACTION_DELAY));
    assert_eq!(define("FL_ACTION_RESET"), u64::from(ACTION_RESET));
    assert_eq!(define("FL_ACTION_REJECT"), u64::from(ACTION_REJECT));
    assert_eq!(define("FL_ACTION_CORRUPT"), u64::from(ACTION_CORRUPT));
    assert_eq!(define("FL_ACTION_STALL"), u64::from(ACTION_STALL));
    assert_eq!(define("FL_ACTION_F_PEER"), u64::from(ACTION_F_PEER));
    assert_eq!(define("FL_ACTION_F_BROKEN"), u64::from(ACTION_F_BROKEN));
    assert_eq!(define("FL_ACTION_F_RESET"), u64::from(ACTION_F_RESET));
    assert_eq!(define("FL_CONN_ALL"), u64::from(CONN_ALL));
    assert_eq!(define("FL_CONN_NEW"), u64::from(CONN_NEW));
    assert_eq!(define("FL_CONN_ESTABLISHED"), u64::from(CONN_ESTABLISHED));
}
