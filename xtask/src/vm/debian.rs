//! A private view of Debian's archive for the kernel packages of the matrix: its own source
//! list, package lists and cache under target/vm/apt, read with the host's apt-get. The
//! machine's apt configuration is never read for sources nor changed, so a suite the host does
//! not list (bullseye on a bookworm host) is reachable, and the host's pins cannot interfere.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The suites kernels come from. Bullseye's own main suite holds its final 5.10 point release
/// for good; bullseye-security is left out on purpose (its ABI numbers keep moving).
const SOURCES: &[(&str, &str)] = &[
    ("http://deb.debian.org/debian", "bullseye main"),
    ("http://deb.debian.org/debian", "bookworm main"),
    (
        "http://deb.debian.org/debian-security",
        "bookworm-security main",
    ),
];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub struct Archive {
    dir: PathBuf,
    updated: bool,
}

impl Archive {
    /// The archive view kept in `dir`. Nothing is fetched until a lookup needs the index.
    pub fn new(dir: &Path) -> Result<Archive> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        }
        let mirror = std::env::var("FAULTLINE_DEBIAN_MIRROR").ok();
        let mut list = String::new();
        for (url, suite) in SOURCES {
            // A mirror of deb.debian.org serves both archives under the same layout.
            let url = match &mirror {
                Some(m) => url.replacen("http://deb.debian.org", m.trim_end_matches('/'), 1),
                None => (*url).to_owned(),
            };
            list.push_str(&format!("deb [signed-by={KEYRING}] {url} {suite}\n"));
        }
        let sources = dir.join("sources.list");
        if fs::read_to_string(&sources).ok().as_deref() != Some(list.as_str()) {
            fs::write(&sources, list).with_context(|| format!("write {}", sources.display()))?;
        }
        Ok(Archive {
            dir: dir.to_owned(),
            updated: false,
        })
    }

    /// `apt-get` or `apt-cache` reading only this view.
    fn apt(&self, program: &str) -> Command {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut cmd = Command::new(program);
        for option in [
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "Dir::Etc::Preferences=/dev/null".to_owned(),
            "Dir::Etc::PreferencesParts=/dev/null".to_owned(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            // The directories are ours; apt's _apt user may not reach them (/root is 0700).
            "APT::Sandbox::User=root".to_owned(),
            "APT::Architecture=amd64".to_owned(),
            "APT::Architectures=amd64".to_owned(),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd
    }

    /// Fetches the package lists, once per run.
    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        println!("vm-test: reading Debian's package lists (bullseye, bookworm, bookworm-security)");
        run(self.apt("apt-get").args(["update", "-qq"]))
            .context("apt-get update of the kernel package lists")?;
        self.updated = true;
        Ok(())
    }

    /// Every version of every package whose name starts with `prefix` and ends with `suffix`,
    /// newest first.
    pub fn versions(&mut self, prefix: &str, suffix: &str) -> Result<Vec<(String, String)>> {
        self.update()?;
        let names = output(self.apt("apt-cache").args(["pkgnames", prefix]))?;
        let names: Vec<&str> = names
            .lines()
            .filter(|n| n.ends_with(suffix) && !n.contains("-dbg") && !n.contains("-unsigned"))
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // "name | version | source", one line per version in the lists.
        let table = output(self.apt("apt-cache").arg("madison").args(&names))?;
        let mut found: Vec<(String, String)> = table
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('|').map(str::trim);
                Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
            })
            .collect();
        found.sort();
        found.dedup();
        sort_newest_first(&mut found)?;
        Ok(found)
    }

    /// Downloads `package=version` as `dest`; apt checks it against the signed lists.
    pub fn download(&mut self, package: &str, version: &str, dest: &Path) -> Result<()> {
        self.update()?;
        let work = dest.with_extension("download");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let spec = format!("{package}={version}");
        println!("vm-test: downloading {spec}");
        run(self
            .apt("apt-get")
            .args(["download", "-qq", &spec])
            .current_dir(&work))?;
        let deb = fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
        // Renamed only once complete, so an interrupted download is never taken for the cache.
        fs::rename(&deb, dest)?;
        fs::remove_dir_all(&work)?;
        Ok(())
    }
}

/// Orders (package, version) pairs by Debian version, newest first (dpkg decides).
fn sort_newest_first(pairs: &mut [(String, String)]) -> Result<()> {
    // Insertion sort: a series has a handful of versions, each comparison is one dpkg call.
    for i in 1..pairs.len() {
        let mut j = i;
        while j > 0 && newer(&pairs[j].1, &pairs[j - 1].1)? {
            pairs.swap(j, j - 1);
            j -= 1;
        }
    }
    Ok(())
}

fn newer(a: &str, b: &str) -> Result<bool> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("spawn dpkg --compare-versions")?;
    Ok(status.success())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}
