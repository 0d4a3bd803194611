//! The real `octate-server` binary as a child process: built once per test run, started
//! on random loopback ports with a clean environment, and killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::peers::WAIT;

/// Builds `octate-server` once (the root package's tests do not build it) and returns its path.
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test runs from <target>/<profile>/deps/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let log_path = target_dir.join("octate-server-build.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "-p",
            "octate-server",
            "--bin",
            "octate-server",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(log);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = wait_bounded(&mut cmd.spawn().unwrap(), Duration::from_secs(900));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            status.success(),
            "cargo build -p octate-server failed:\n{log}"
        );
        let bin = profile_dir.join(format!("octate-server{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// Waits for `child` to exit, killing it and failing after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} still running after {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary with a clean environment: none of the caller's Octate settings, no `.env`.
pub fn server_command() -> Command {
    let mut cmd = Command::new(server_binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("OCTATE_")
            || ["HOST", "PORT", "SIGNALING_PORT", "CORS_ORIGINS"].contains(&name.as_str())
        {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(std::env::temp_dir())
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs the binary to completion (bounded); returns exit code, stdout, stderr.
pub fn run_to_exit(mut cmd: Command) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

/// A running `octate-server` process; killed on drop if still running.
pub struct RealServer {
    /// The process.
    pub child: Child,
    /// The HTTP API's address.
    pub http: SocketAddr,
    /// The signaling (WebSocket) address.
    pub signaling: SocketAddr,
}

impl RealServer {
    /// Starts the binary on random loopback ports and reads its `listening` line.
    pub fn start(secret: &str) -> Self {
        Self::start_command(server_command(), secret)
    }

    /// Like `start`, with the process's open-file limit lowered to `limit`.
    pub fn start_with_file_limit(secret: &str, limit: u32) -> Self {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={limit}:{limit}"))
            .arg(server_binary())
            .current_dir(std::env::temp_dir())
            .env("RUST_LOG", "warn");
        Self::start_command(cmd, secret)
    }

    /// Starts `cmd` (the binary, or a wrapper running it) on random ports of 127.0.0.2.
    pub fn start_command(mut cmd: Command, secret: &str) -> Self {
        // Real binaries listen on 127.0.0.2, so that a port the in-process servers of
        // other tests (on 127.0.0.1) have just released is never theirs.
        cmd.env("HOST", "127.0.0.2")
            .env("PORT", "0")
            .env("SIGNALING_PORT", "0")
            .env("OCTATE_TOKEN_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("octate-server printed no listening line");
        };
        let addr = |key: &str| -> SocketAddr {
            let field = line.split_whitespace().find_map(|w| w.strip_prefix(key));
            field
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        assert!(line.starts_with("octate-server listening "), "{line}");
        let (http, signaling) = (addr("http="), addr("signaling="));
        Self {
            child,
            http,
            signaling,
        }
    }

    /// The signaling URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.signaling)
    }

    /// A token for `user` in `room` from the HTTP API.
    pub async fn token(&self, user: &str, room: &str) -> String {
        let fetch = octate_client::fetch_token(self.http, user, room, None);
        tokio::time::timeout(WAIT, fetch).await.unwrap().unwrap()
    }

    /// Sends the process a signal (`kill` with `signal`, e.g. `-TERM`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Waits (without blocking the runtime) for the process to exit within `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "octate-server still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
