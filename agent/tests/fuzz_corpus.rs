//! Replays the fuzz corpus (`fuzz/corpus/request`) and the hand-written hostile inputs
//! (`fuzz/hostile`) through the `request` fuzz target's checks (`fuzz/check.rs`), on the stable
//! toolchain, so that every `cargo test` holds the properties the fuzzer found to hold.
//!
//! Every hostile input must be refused before anything is changed, with the code and field
//! that `fuzz/hostile-verdicts.txt` pins for it. Files named `gap-*` (input validation lets
//! through, refused later by the kernel or read leniently) are the exception. Run with
//! `-- --nocapture` to see the table.

#[path = "../../fuzz/check.rs"]
mod check;

use std::{
    collections::BTreeMap,
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use check::Verdict;

/// The checked-in corpus is minimised to a few hundred inputs; far fewer means it went missing.
const MIN_CORPUS_INPUTS: usize = 250;
const MIN_HOSTILE_INPUTS: usize = 190;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file in `dir`, by name.
fn inputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, bytes)
        })
        .collect()
}

/// Runs the checks on each input; a failed property names its file instead of stopping
/// the replay (its panic message is in the captured output too).
fn replay(inputs: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Result<Verdict, String>> {
    inputs
        .iter()
        .map(|(name, bytes)| {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| check::check(bytes)));
            let outcome = outcome.map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".to_owned())
            });
            (name.clone(), outcome)
        })
        .collect()
}

/// Replays every input under `fuzz/<sub>`; panics listing each one whose checks failed.
fn replay_all(sub: &str) -> BTreeMap<String, Result<Verdict, String>> {
    let verdicts = replay(&inputs(&fuzz_dir().join(sub)));
    let failed: Vec<String> = verdicts
        .iter()
        .filter_map(|(name, outcome)| outcome.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "properties broken:\n{}",
        failed.join("\n")
    );
    verdicts
}

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let verdicts = replay_all("corpus/request");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for verdict in verdicts.values().flatten() {
        *tally.entry(verdict.code_name()).or_default() += 1;
    }
    println!(
        "{} corpus inputs replayed from fuzz/corpus/request",
        verdicts.len()
    );
    for (name, count) in &tally {
        println!("  {count:>5}  {name}");
    }
    assert!(
        verdicts.len() >= MIN_CORPUS_INPUTS,
        "only {} corpus inputs in fuzz/corpus/request",
        verdicts.len()
    );
    // Valid applies reach normalisation and compilation, the deepest checks.
    let applies = tally.get("accepted:Apply").copied().unwrap_or(0);
    assert!(applies >= 20, "only {applies} valid applies in the corpus");
}

/// `fuzz/hostile-verdicts.txt`: `file code field` per line (`-` for no field), `#` comments.
fn expected_verdicts() -> BTreeMap<String, (String, String)> {
    let path = fuzz_dir().join("hostile-verdicts.txt");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                [file, code, field] => (file.to_owned(), (code.to_owned(), field.to_owned())),
                _ => panic!("{}: not `file code field`: {line:?}", path.display()),
            }
        })
        .collect()
}

#[test]
fn hostile_inputs_are_refused_with_stable_codes() {
    let verdicts = replay_all("hostile");
    let expected = expected_verdicts();

    let mut wrong = Vec::new();
    println!("{:<56} {:<18} field", "hostile input", "verdict");
    for (name, verdict) in &verdicts {
        let verdict = verdict.as_ref().expect("checked above");
        let got = (verdict.code_name(), verdict.field_name());
        println!("{name:<56} {:<18} {}", got.0, got.1);
        let refused = matches!(verdict, Verdict::Refused { .. } | Verdict::Closed);
        if !refused && !name.starts_with("gap-") {
            wrong.push(format!("{name}: not refused but {}", got.0));
        }
        match expected.get(name) {
            Some(want) if *want == got => {}
            Some(want) => wrong.push(format!("{name}: expected {want:?}, got {got:?}")),
            None => wrong.push(format!(
                "{name}: missing from hostile-verdicts.txt ({got:?})"
            )),
        }
    }
    for name in expected.keys().filter(|name| !verdicts.contains_key(*name)) {
        wrong.push(format!(
            "{name}: listed in hostile-verdicts.txt but not in fuzz/hostile"
        ));
    }
    assert!(wrong.is_empty(), "hostile verdicts:\n{}", wrong.join("\n"));
    assert!(
        verdicts.len() >= MIN_HOSTILE_INPUTS,
        "only {} hostile inputs",
        verdicts.len()
    );
}
