//! A `faultd` process owned by one test, with its own socket and state dir.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::lab::require_root;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;

static NEXT_AGENT: AtomicUsize = AtomicUsize::new(0);

/// A workspace binary: `$FAULTLINE_BIN_DIR/<name>`, else next to the test's
/// own deps dir (target/<profile>/deps/test-hash -> target/<profile>/<name>).
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FAULTLINE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current test executable");
            exe.ancestors()
                .nth(2)
                .expect("test binary lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (or set FAULTLINE_BIN_DIR)",
        path.display()
    );
    path
}

pub struct Agent {
    child: Child,
    /// Set once the process has been reaped, so Drop leaves it alone.
    exited: Option<ExitStatus>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(&[])
    }

    /// Starts faultd with `--socket` and `--state-dir` in a fresh directory,
    /// followed by `args`, and waits until it answers `hello`.
    pub fn start_with(args: &[&str]) -> Agent {
        require_root();
        let n = NEXT_AGENT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("faultline-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Agent::spawn_in(dir, args)
    }

    /// A new faultd on this one's socket and state dir, as after a crash: this one must have
    /// exited (e.g. `sigkill`). The old log is kept as `faultd.log.1`.
    pub fn restart(mut self) -> Agent {
        assert!(
            self.exited.is_some(),
            "restart needs the old faultd to have exited"
        );
        let dir = std::mem::take(&mut self.dir);
        let _ = fs::rename(dir.join("faultd.log"), dir.join("faultd.log.1"));
        std::mem::forget(self);
        Agent::spawn_in(dir, &[])
    }

    fn spawn_in(dir: PathBuf, args: &[&str]) -> Agent {
        let socket = dir.join("faultd.sock");
        let log = File::create(dir.join("faultd.log")).expect("create faultd.log");
        let child = Command::new(bin_path("faultd"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn faultd");
        let mut agent = Agent {
            child,
            exited: None,
            dir,
            socket,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll faultd") {
                self.exited = Some(status);
                panic!(
                    "faultd exited during startup ({status}):\n{}",
                    self.log_tail()
                );
            }
            if let Some(reply) = self.try_hello() {
                if reply.is_object() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "faultd did not answer hello within {STARTUP_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_hello(&self) -> Option<Value> {
        let mut conn = Conn::try_open(&self.socket)?;
        conn.send(&json!({"id": 0, "op": "hello"}));
        conn.try_recv()
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request on a fresh connection.
    pub fn request(&self, req: Value) -> Value {
        self.connect().request(&req)
    }

    pub fn connect(&self) -> Conn {
        Conn::try_open(&self.socket)
            .unwrap_or_else(|| panic!("connect to {}", self.socket.display()))
    }

    /// Runs `faultctl --socket <ours> <args>`.
    pub fn faultctl(&self, args: &[&str]) -> Output {
        Command::new(bin_path("faultctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("spawn faultctl")
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        self.exited = Some(self.child.wait().expect("reap faultd"));
    }

    /// Panics if faultd is still running `STOP_TIMEOUT` after SIGTERM.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        let status = self.terminate();
        status.unwrap_or_else(|| {
            self.sigkill();
            panic!(
                "faultd ignored SIGTERM for {STOP_TIMEOUT:?}:\n{}",
                self.log_tail()
            )
        })
    }

    /// SIGTERM, then wait; None if it is still running after `STOP_TIMEOUT`.
    fn terminate(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll faultd") {
                self.exited = Some(status);
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("faultd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- faultd log tail ({}) ---\n{}",
                self.dir.display(),
                self.log_tail()
            );
        }
        if self.terminate().is_none() {
            self.sigkill();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A persistent line-delimited JSON connection to faultd.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn try_open(socket: &Path) -> Option<Conn> {
        let stream = UnixStream::connect(socket).ok()?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set reply timeout");
        let writer = stream.try_clone().expect("clone unix stream");
        Some(Conn {
            reader: BufReader::new(stream),
            writer,
        })
    }

    pub fn send(&mut self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).expect("serialize request");
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// Writes bytes as they are, for malformed or partial requests.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to faultd");
    }

    /// Next reply line; panics on EOF, timeout or invalid JSON.
    pub fn recv(&mut self) -> Value {
        self.try_recv()
            .expect("faultd closed the connection or sent no reply in time")
    }

    /// Next reply line, or None if faultd closed the connection (or timed out).
    pub fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("faultd sent invalid JSON ({e}): {line:?}")),
            ),
        }
    }

    pub fn request(&mut self, req: &Value) -> Value {
        self.send(req);
        self.recv()
    }
}
