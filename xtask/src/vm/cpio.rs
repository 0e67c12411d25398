//! A newc cpio archive (the initramfs format), written directly: every entry owned by root
//! and device nodes without mknod, so building it needs no privileges and no cpio tool.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

enum Entry {
    Dir,
    File { mode: u32, data: Data },
    Symlink(PathBuf),
    CharDev { major: u32, minor: u32 },
}

enum Data {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// Guest paths to entries. Sorted by path components, a directory precedes its contents,
/// which is the order the kernel's unpacker needs.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Archive {
    pub fn dir(&mut self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        for dir in path.ancestors().filter(|d| d.parent().is_some()) {
            self.entries.entry(dir.to_owned()).or_insert(Entry::Dir);
        }
    }

    pub fn bytes(&mut self, path: impl AsRef<Path>, mode: u32, data: impl Into<Vec<u8>>) {
        let path = path.as_ref();
        self.parent_dirs(path);
        let data = Data::Bytes(data.into());
        self.entries
            .insert(path.to_owned(), Entry::File { mode, data });
    }

    /// A host file at a different guest path.
    pub fn host_file_at(&mut self, path: impl AsRef<Path>, host: &Path) -> Result<()> {
        let mode = fs::metadata(host)
            .with_context(|| format!("stat {}", host.display()))?
            .permissions()
            .mode();
        let path = path.as_ref();
        self.parent_dirs(path);
        let data = Data::Host(host.to_owned());
        self.entries
            .insert(path.to_owned(), Entry::File { mode, data });
        Ok(())
    }

    pub fn symlink(&mut self, path: impl AsRef<Path>, target: impl Into<PathBuf>) {
        let path = path.as_ref();
        self.parent_dirs(path);
        self.entries
            .insert(path.to_owned(), Entry::Symlink(target.into()));
    }

    pub fn char_dev(&mut self, path: impl AsRef<Path>, major: u32, minor: u32) {
        let path = path.as_ref();
        self.parent_dirs(path);
        self.entries
            .insert(path.to_owned(), Entry::CharDev { major, minor });
    }

    /// A host file, directory or symlink at the same path in the guest. Symlinks on the way
    /// (/lib -> usr/lib, /usr/bin/awk -> /etc/alternatives/awk -> ...) are recreated, and
    /// their targets copied, so every path the host uses resolves the same way in the guest.
    pub fn host_path(&mut self, path: &Path) -> Result<()> {
        if !path.is_absolute() {
            bail!("{} is not absolute", path.display());
        }
        // `real` never contains a symlink, so it can name a guest directory.
        let mut real = PathBuf::from("/");
        for comp in path.components() {
            match comp {
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => {
                    real.pop();
                    continue;
                }
                Component::Prefix(_) => bail!("unexpected path prefix"),
                Component::Normal(name) => {
                    let next = real.join(name);
                    let meta = fs::symlink_metadata(&next)
                        .with_context(|| format!("stat {}", next.display()))?;
                    if meta.is_symlink() {
                        let canonical = fs::canonicalize(&next)
                            .with_context(|| format!("resolve {}", next.display()))?;
                        if !self.entries.contains_key(&next) {
                            let target = fs::read_link(&next)?;
                            self.entries
                                .insert(next.clone(), Entry::Symlink(target.clone()));
                            self.host_path(&real.join(target))?;
                        }
                        real = canonical;
                    } else {
                        if !self.entries.contains_key(&next) {
                            let entry = if meta.is_dir() {
                                Entry::Dir
                            } else {
                                let mode = meta.permissions().mode();
                                let data = Data::Host(next.clone());
                                Entry::File { mode, data }
                            };
                            self.entries.insert(next.clone(), entry);
                        }
                        real = next;
                    }
                }
            }
        }
        Ok(())
    }

    /// A host directory and everything below it, at the same paths.
    pub fn host_tree(&mut self, dir: &Path) -> Result<()> {
        self.host_tree_where(dir, &|_| true)
    }

    /// A host directory and what is below it, less the entries (and their subtrees) `keep`
    /// turns down.
    pub fn host_tree_where(&mut self, dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
        self.host_path(dir)?;
        for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if !keep(&path) {
                continue;
            }
            if fs::symlink_metadata(&path)?.is_dir() {
                self.host_tree_where(&path, keep)?;
            } else {
                self.host_path(&path)?;
            }
        }
        Ok(())
    }

    /// A host executable plus the shared libraries and dynamic loader it needs, per `ldd`.
    pub fn host_exe(&mut self, path: &Path) -> Result<()> {
        self.host_path(path)?;
        self.libraries_of(path)
    }

    pub fn libraries_of(&mut self, exe: &Path) -> Result<()> {
        let out = Command::new("ldd").arg(exe).output().context("spawn ldd")?;
        // Static executables make ldd fail ("not a dynamic executable"): nothing to copy.
        if !out.status.success() {
            return Ok(());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("not found") {
                bail!("{}: {}", exe.display(), line.trim());
            }
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                self.host_path(Path::new(lib))?;
            }
        }
        Ok(())
    }

    fn parent_dirs(&mut self, path: &Path) {
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let file = File::create(out).with_context(|| format!("create {}", out.display()))?;
        let mut w = BufWriter::new(file);
        for (ino, (path, entry)) in (1..).zip(&self.entries) {
            let name = path.strip_prefix("/").unwrap_or(path);
            let (mode, rdev, size) = match entry {
                Entry::Dir => (0o040_755, (0, 0), 0),
                Entry::File { mode, data } => {
                    let size = match data {
                        Data::Host(p) => fs::metadata(p)?.size(),
                        Data::Bytes(b) => b.len() as u64,
                    };
                    (0o100_000 | (mode & 0o7777), (0, 0), size)
                }
                Entry::Symlink(target) => (0o120_777, (0, 0), target.as_os_str().len() as u64),
                Entry::CharDev { major, minor } => (0o020_600, (*major, *minor), 0),
            };
            header(&mut w, ino, mode, rdev, size, name)?;
            match entry {
                Entry::File {
                    data: Data::Host(p),
                    ..
                } => {
                    let copied = io::copy(&mut File::open(p)?, &mut w)?;
                    if copied != size {
                        bail!("{} changed while being archived", p.display());
                    }
                }
                Entry::File {
                    data: Data::Bytes(b),
                    ..
                } => w.write_all(b)?,
                Entry::Symlink(target) => w.write_all(target.as_os_str().as_encoded_bytes())?,
                Entry::Dir | Entry::CharDev { .. } => {}
            }
            pad(&mut w, size)?;
        }
        header(&mut w, 0, 0, (0, 0), 0, Path::new("TRAILER!!!"))?;
        w.flush()?;
        Ok(())
    }
}

/// newc: magic, then 13 fields of 8 hex digits, then the NUL-terminated name, padded to 4 bytes.
fn header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    (rdev_major, rdev_minor): (u32, u32),
    size: u64,
    name: &Path,
) -> Result<()> {
    let name = name.as_os_str().as_encoded_bytes();
    let size = u32::try_from(size).context("file over 4 GiB")?;
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let namesize = name.len() + 1;
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev_major,
        rdev_minor,
        u32::try_from(namesize)?,
        0,
    ];
    write!(w, "070701")?;
    for f in fields {
        write!(w, "{f:08x}")?;
    }
    w.write_all(name)?;
    w.write_all(&[0])?;
    pad(w, (110 + namesize) as u64)
}

fn pad(w: &mut impl Write, len: u64) -> Result<()> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0; 3][..n as usize])?;
    Ok(())
}
