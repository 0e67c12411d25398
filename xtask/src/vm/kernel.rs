//! The kernel matrix: Debian kernel packages, unpacked (never installed) for their vmlinuz and
//! the modules the tests need.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection};

use super::debian::Archive;

pub struct Kernel {
    /// Used by `--kernel` and as the directory under target/vm/.
    pub name: &'static str,
    /// The series: packages named `{prefix}…{suffix}`. When the pinned version has left the
    /// archive (point releases do), the series' newest version is used instead.
    prefix: &'static str,
    suffix: &'static str,
    /// (package, version) the matrix was last proven on; used while the archive has it.
    pinned: (&'static str, &'static str),
}

/// One line per kernel. The "cloud" flavour is small and boots fast; it has netem and fq as
/// modules. Debian 11 (5.10: Amazon Linux 2's series), Debian 12 (6.1: Amazon Linux 2023's)
/// and Debian 12's newer 6.12 (RHEL 10's series); this host's kernel is the host stage.
#[rustfmt::skip]
pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "debian11-cloud-5.10",
        prefix: "linux-image-5.10.0-", suffix: "-cloud-amd64",
        pinned: ("linux-image-5.10.0-32-cloud-amd64", "5.10.223-1"),
    },
    Kernel {
        name: "debian12-cloud-6.1",
        prefix: "linux-image-6.1.0-", suffix: "-cloud-amd64",
        pinned: ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3"),
    },
    Kernel {
        name: "debian12-cloud-6.12",
        prefix: "linux-image-6.12.", suffix: "+deb12-cloud-amd64",
        pinned: ("linux-image-6.12.117+deb12-cloud-amd64", "6.12.117-1~deb12u1"),
    },
];

/// Loaded in the guest, with whatever they depend on. Built-in ones are skipped, and missing
/// ones only reported: tests that need them will say so.
const MODULES: &[&str] = &[
    "sch_netem",
    "sch_fq",
    "sch_htb",
    "sch_tbf",
    "sch_prio",
    "sch_ingress", // also provides clsact
    "cls_bpf",
    "cls_u32", // the benchmark's tc comparison
    "act_mirred",
    "act_bpf",
    "ifb",
    "veth",
];

pub struct Image {
    pub vmlinuz: PathBuf,
    /// (name, decompressed .ko) in load order: dependencies first.
    pub modules: Vec<(String, Vec<u8>)>,
}

/// The kernel's package, resolved and downloaded once (see `resolve`), unpacked once into
/// `cache`, and the modules the guest loads.
pub fn prepare(k: &Kernel, cache: &Path, archive: &mut Archive) -> Result<Image> {
    fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let (package, version) = resolve(k, cache, archive)?;
    println!("vm-test: {}: {package} {version}", k.name);
    let stem = format!("{package}_{version}");
    let deb = cache.join(format!("{stem}.deb"));
    if !deb.exists() {
        archive.download(&package, &version, &deb)?;
    }
    let root = cache.join(&stem);
    if !root.exists() {
        // Unpacked beside and renamed, so a half-unpacked tree is never reused.
        let tmp = cache.join(format!("{stem}.unpack"));
        let _ = fs::remove_dir_all(&tmp);
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&tmp)
            .status()
            .context("spawn dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed ({status})", deb.display());
        }
        fs::rename(&tmp, &root)?;
    }

    let vmlinuz = only_entry(&root.join("boot"), "vmlinuz-")?;
    let mod_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .with_context(|| format!("no lib/modules in {}", root.display()))?;
    let mod_dir = only_entry(&mod_root, "")?;
    let modules = Modules::index(&mod_dir)?.load_order(k.name)?;
    Ok(Image { vmlinuz, modules })
}

/// Which package and version to boot: the pinned one when it is cached or still in the
/// archive; otherwise the series' newest in the archive; without the archive (offline), the
/// newest of the series already cached.
fn resolve(k: &Kernel, cache: &Path, archive: &mut Archive) -> Result<(String, String)> {
    let (pinned_package, pinned_version) = k.pinned;
    let pinned = (pinned_package.to_owned(), pinned_version.to_owned());
    if is_cached(cache, &pinned) {
        return Ok(pinned);
    }
    match archive.versions(k.prefix, k.suffix) {
        Ok(available) if available.contains(&pinned) => Ok(pinned),
        Ok(available) => {
            let newest = available.into_iter().next().with_context(|| {
                format!("no {}*{} package in Debian's archive", k.prefix, k.suffix)
            })?;
            println!(
                "vm-test: {}: NOTE: the pinned {pinned_package} {pinned_version} has left \
                 Debian's archive; using the series' newest, {} {} (update `pinned` in \
                 xtask/src/vm/kernel.rs once it passes)",
                k.name, newest.0, newest.1
            );
            Ok(newest)
        }
        Err(e) => {
            let cached = cached_versions(cache, k);
            let newest = cached.into_iter().next_back().with_context(|| {
                format!("cannot read Debian's package lists and nothing is cached: {e:#}")
            })?;
            println!(
                "vm-test: {}: NOTE: cannot read Debian's package lists ({e:#}); using the cached {} {}",
                k.name, newest.0, newest.1
            );
            Ok(newest)
        }
    }
}

fn is_cached(cache: &Path, (package, version): &(String, String)) -> bool {
    cache.join(format!("{package}_{version}.deb")).is_file()
}

/// The (package, version) pairs of `k`'s series in the cache, in name order.
fn cached_versions(cache: &Path, k: &Kernel) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = fs::read_dir(cache)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (package, version) = name.strip_suffix(".deb")?.split_once('_')?;
            (package.starts_with(k.prefix) && package.ends_with(k.suffix))
                .then(|| (package.to_owned(), version.to_owned()))
        })
        .collect();
    found.sort();
    found
}

/// What the package has: module files by name, and the names built into the kernel.
struct Modules {
    files: Vec<(String, PathBuf)>,
    builtin: HashSet<String>,
}

impl Modules {
    fn index(dir: &Path) -> Result<Modules> {
        let mut files = Vec::new();
        walk(&dir.join("kernel"), &mut |path| {
            if let Some(name) = module_name(path) {
                files.push((name, path.to_owned()));
            }
        })?;
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .context("read modules.builtin")?
            .lines()
            .filter_map(|l| module_name(Path::new(l)))
            .collect();
        Ok(Modules { files, builtin })
    }

    fn load_order(&self, kernel: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let (mut builtin, mut absent) = (Vec::new(), Vec::new());
        for &name in MODULES {
            if self.file(name).is_some() {
                self.visit(name, &mut seen, &mut order)?;
            } else if self.builtin.contains(name) {
                builtin.push(name);
            } else {
                absent.push(name);
            }
        }
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        println!("vm-test: {kernel}: modules {}", names.join(" "));
        if !builtin.is_empty() {
            println!("vm-test: {kernel}: built in {}", builtin.join(" "));
        }
        if !absent.is_empty() {
            println!(
                "vm-test: {kernel}: WARNING: not available {}",
                absent.join(" ")
            );
        }
        Ok(order)
    }

    /// Depth-first: a module is pushed after everything it depends on.
    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let path = self
            .file(name)
            .with_context(|| format!("module {name} not in the package"))?;
        let ko = decompress(path)?;
        for dep in depends(&ko).with_context(|| format!("read {}", path.display()))? {
            if self.file(&dep).is_some() {
                self.visit(&dep, seen, order)?;
            } else if !self.builtin.contains(&dep) {
                bail!("{name} depends on {dep}, which is neither a module nor built in");
            }
        }
        order.push((name.to_owned(), ko));
        Ok(())
    }

    fn file(&self, name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
    }
}

/// "kernel/net/sched/sch_netem.ko.xz" -> "sch_netem". The kernel treats - and _ alike in
/// module names; `depends=` uses _.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))?;
    Some(stem.replace('-', "_"))
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "ko") {
        return fs::read(path).with_context(|| format!("read {}", path.display()));
    }
    // The guest gets plain .ko files: the one format every insmod and kernel config loads.
    let out = Command::new("xz")
        .arg("-dc")
        .arg(path)
        .output()
        .context("spawn xz")?;
    if !out.status.success() {
        bail!(
            "xz -dc {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The `depends=` entry of the module's .modinfo section (what depmod reads; the package ships
/// no modules.dep, which depmod would generate on installation).
fn depends(ko: &[u8]) -> Result<Vec<String>> {
    let elf = object::File::parse(ko)?;
    let modinfo = elf
        .section_by_name(".modinfo")
        .context("no .modinfo section")?
        .data()?;
    let deps = modinfo
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"depends="))
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(deps)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect())
}

/// The one entry of `dir` whose name starts with `prefix`.
fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {prefix}* in {}, found {}",
            dir.display(),
            found.len()
        ),
    }
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}
