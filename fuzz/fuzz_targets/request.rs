//! Request lines, as faultd's socket reads them, through parsing, validation, normalisation and
//! compilation to the datapath's values. The properties are in `../check.rs`, shared with the
//! corpus replay test `agent/tests/fuzz_corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::check(data);
});
