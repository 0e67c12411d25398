//! The one writer of raw netlink attributes, for the payloads the typed netlink crates carry
//! only as bytes: netem's options (a struct followed by attributes), htb's parameters. Typed
//! messages (`netlink_packet_route`) wrap what this writes.

/// Set on an attribute whose payload is itself attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_HDRLEN: usize = 4;

/// `TCA_OPTIONS` and `TCA_STAB` of a tc message (enum TCA_* in linux/rtnetlink.h).
pub const TCA_OPTIONS: u16 = 2;
pub const TCA_STAB: u16 = 8;

/// Appends one attribute to `out`: nla_len counts the header and payload, but not the zero
/// padding that 4-byte-aligns the next attribute (NLA_ALIGN).
pub fn put(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = NLA_HDRLEN + payload.len();
    // Payloads here are at most netem's 8 KiB delay table, far below u16::MAX.
    debug_assert!(len <= usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

/// One attribute on its own.
pub fn attribute(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLA_HDRLEN + payload.len() + 3);
    put(&mut out, kind, payload);
    out
}

/// u32 values in host byte order, as C structs of u32 fields lay them out.
pub fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// The attributes in `bytes`, as (type without NLA_F_NESTED, payload); stops at the first
/// malformed one.
pub fn parse(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while bytes.len() >= NLA_HDRLEN {
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & !NLA_F_NESTED;
        if len < NLA_HDRLEN || len > bytes.len() {
            break;
        }
        found.push((kind, &bytes[NLA_HDRLEN..len]));
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_exclude_the_padding_that_aligns_the_next_attribute() {
        let mut out = attribute(5, &[1, 2, 3]);
        assert_eq!(out.len(), 8);
        assert_eq!(u16::from_ne_bytes([out[0], out[1]]), 7);
        assert_eq!(u16::from_ne_bytes([out[2], out[3]]), 5);
        assert_eq!(out[4..], [1, 2, 3, 0]);
        put(&mut out, 6 | NLA_F_NESTED, &words(&[9]));
        assert_eq!(out.len(), 16);
        assert_eq!(u16::from_ne_bytes([out[8], out[9]]), 8);
        assert_eq!(u16::from_ne_bytes([out[10], out[11]]), 6 | NLA_F_NESTED);
        assert_eq!(
            parse(&out),
            vec![(5, &[1, 2, 3][..]), (6, &words(&[9])[..])]
        );
        assert_eq!(parse(&out[..10]), vec![(5, &[1, 2, 3][..])]);
    }
}
