//! A `faultd` process owned by one test, with its own socket and state dir.

use std::fs;
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

/// A copy of workspace binary `name` that any uid can run: the build's own may lie under a
/// directory other users cannot enter (a checkout in /root, mode 0700). Removed on drop.
pub struct SharedBin {
    dir: PathBuf,
    path: PathBuf,
}

impl SharedBin {
    pub fn new(name: &str) -> SharedBin {
        use std::os::unix::fs::PermissionsExt;
        let n = NEXT_AGENT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("faultline-bin-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(name);
        fs::copy(bin_path(name), &path).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        for (p, mode) in [(&dir, 0o755), (&path, 0o755)] {
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        }
        SharedBin { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SharedBin {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub struct Agent {
    child: Child,
    /// Set once the process has been reaped, so Drop leaves it alone.
    exited: Option<ExitStatus>,
    dir: PathBuf,
    socket: PathBuf,
    /// This agent's own bpffs pin root, so parallel tests never see each other's pins.
    pin_dir: PathBuf,
    args: Vec<String>,
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
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/faultline-test-{}-{n}",
            std::process::id()
        ));
        let args = args.iter().map(|a| a.to_string()).collect();
        Agent::spawn_in(dir, pin_dir, args)
    }

    /// A new faultd on this one's socket, state and pins, with the same arguments, as after a
    /// crash: this one must have exited (e.g. `sigkill`); its reaper, if any, hands over.
    /// The old log is appended to `faultd.log.1`.
    pub fn restart(mut self) -> Agent {
        assert!(
            self.exited.is_some(),
            "restart needs the old faultd to have exited"
        );
        let dir = std::mem::take(&mut self.dir);
        let pin_dir = std::mem::take(&mut self.pin_dir);
        let args = std::mem::take(&mut self.args);
        let old = fs::read_to_string(dir.join("faultd.log")).unwrap_or_default();
        let mut kept = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("faultd.log.1"))
            .expect("open faultd.log.1");
        let _ = kept.write_all(old.as_bytes());
        std::mem::forget(self);
        Agent::spawn_in(dir, pin_dir, args)
    }

    fn spawn_in(dir: PathBuf, pin_dir: PathBuf, args: Vec<String>) -> Agent {
        let socket = dir.join("faultd.sock");
        // Appended to: the reaper of an earlier faultd may still write to it.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("faultd.log"))
            .expect("create faultd.log");
        let child = Command::new(bin_path("faultd"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(&args)
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
            pin_dir,
            args,
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

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The pids of reapers working for this agent's state dir.
    pub fn reaper_pids(&self) -> Vec<i32> {
        let state = self.state_dir();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                args.contains(&b"--reap".as_slice())
                    && args.contains(&state.as_os_str().as_encoded_bytes())
            })
            .collect()
    }

    /// Waits until no reaper works for this agent; false if one still does after `limit`.
    pub fn wait_no_reaper(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.reaper_pids().is_empty() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Sends `signal` to faultd.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        kill(pid, signal).expect("signal faultd");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request on a fresh connection.
    pub fn request(&self, req: Value) -> Value {
        self.connect().request(&req)
    }

    /// One request on a fresh connection; None if faultd refuses the connection or closes it.
    pub fn try_request(&self, req: Value) -> Option<Value> {
        Conn::try_open(&self.socket)?
            .try_request(&req)
            .filter(|reply| reply["ok"] == true)
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
        // A reaper left by a killed faultd reverts everything on SIGTERM; one left by a clean
        // exit has nothing to do and exits by itself.
        if !self.wait_no_reaper(Duration::from_millis(500)) {
            for pid in self.reaper_pids() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            if !self.wait_no_reaper(STOP_TIMEOUT) {
                for pid in self.reaper_pids() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        // Empty unless a test failed half-way; a failed test must not leave pins either.
        let _ = fs::remove_dir_all(&self.pin_dir);
    }
}

/// A persistent line-delimited JSON connection to faultd.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    pub fn try_open(socket: &Path) -> Option<Conn> {
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

    /// One request, its reply line as it came (for timing an answer apart from parsing it).
    pub fn request_line(&mut self, req: &Value) -> String {
        self.send(req);
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).expect("read from faultd");
        assert!(read > 0, "faultd closed the connection");
        line
    }

    /// A request that may meet a dead faultd: None when the connection breaks.
    pub fn try_request(&mut self, req: &Value) -> Option<Value> {
        let mut line = serde_json::to_vec(req).expect("serialize request");
        line.push(b'\n');
        self.writer.write_all(&line).ok()?;
        self.try_recv()
    }
}
