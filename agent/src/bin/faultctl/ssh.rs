//! `--ssh [USER@]HOST`: reach a remote faultd through ssh's stream-local forwarding, so the
//! remote host needs no network listener: `ssh -L <local socket>:<remote socket>`, held for
//! the life of the command.

use std::{
    fs, io,
    os::unix::{fs::DirBuilderExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultline::control::client::ClientError;

/// How long ssh gets to log in and open the forwarding.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ssh -L`; dropping it ends ssh and removes the local socket.
pub(crate) struct Tunnel {
    ssh: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Tunnel {
    /// Forwards a private local socket to `remote_socket` on `destination`. The ssh program is
    /// `ssh` on PATH, or `$FAULTLINE_SSH`.
    pub(crate) fn open(destination: &str, remote_socket: &Path) -> Result<Tunnel, ClientError> {
        let unreachable = |source: io::Error| ClientError::Connect {
            path: PathBuf::from(format!("{destination}:{}", remote_socket.display())),
            source,
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("faultctl-ssh-{}-{stamp}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(unreachable)?;
        let socket = dir.join("faultd.sock");
        let program = std::env::var_os("FAULTLINE_SSH").unwrap_or_else(|| "ssh".into());
        let spawned = Command::new(program)
            .args([
                "-nNT",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StreamLocalBindUnlink=yes",
            ])
            .arg("-L")
            .arg(format!("{}:{}", socket.display(), remote_socket.display()))
            .arg("--")
            .arg(destination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its own process group: a Ctrl-C meant for `faultctl run` must not cut the
            // connection its revoke goes over. (So ssh cannot prompt: use keys or an agent.)
            .process_group(0)
            .spawn();
        let ssh = match spawned {
            Ok(ssh) => ssh,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(unreachable(e));
            }
        };
        // From here on, Drop cleans up.
        let mut tunnel = Tunnel { ssh, dir, socket };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while !tunnel.socket.exists() {
            if let Some(status) = tunnel.ssh.try_wait().map_err(unreachable)? {
                return Err(unreachable(io::Error::other(format!(
                    "ssh exited ({status}) before forwarding the socket"
                ))));
            }
            if Instant::now() > deadline {
                return Err(unreachable(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "ssh did not forward the socket in 30 s",
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(tunnel)
    }

    /// The local end, to connect to as if faultd were here.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.ssh.kill();
        let _ = self.ssh.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
