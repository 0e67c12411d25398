//! The Python the tests run: the virtual environment scripts/setup.sh makes (Debian's system
//! pip refuses installs, PEP 668), at `$FAULTLINE_VENV` or target/venv of the workspace.

use std::path::PathBuf;

/// The environment's interpreter, if scripts/setup.sh made it.
pub fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("FAULTLINE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv"));
    let python = venv.join("bin/python");
    python.is_file().then_some(python)
}
