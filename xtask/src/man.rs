//! `cargo xtask man`: faultctl's man pages (faultctl.1, and one per subcommand), generated
//! from its clap definition by faultctl itself, so they always say what the binary does.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct ManArgs {
    /// Where to write the pages.
    #[arg(long, default_value = "target/man")]
    out: String,
}

pub fn man(args: &ManArgs) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--quiet", "--bin", "faultctl"])
        .current_dir(root)
        .status()
        .context("spawn cargo build")?;
    if !built.success() {
        bail!("cargo build --bin faultctl failed");
    }
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let status = Command::new(root.join("target/debug/faultctl"))
        .arg("man")
        .arg(&out)
        .status()
        .context("spawn faultctl man")?;
    if !status.success() {
        bail!("faultctl man failed ({status})");
    }
    println!(
        "man: pages in {} (man -l {}/faultctl.1)",
        out.display(),
        out.display()
    );
    Ok(())
}
