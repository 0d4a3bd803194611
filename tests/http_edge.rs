//! Edge cases of the HTTP side over real sockets: `Origin` headers that are not origins,
//! production without an origin list (the real binary), static files (symlinks, `HEAD`,
//! files larger than memory should hold), the WebSocket upgrade method, and the
//! `Authorization` scheme.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestServer;
use common::peers::{WAIT, assert_http_error, get, post};
use octate_test::binary::{server_command, wait_bounded};
use octate_transport::CorsOrigins;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_KEY: &str = "admin-key-0123456789";
const ALLOWED: &str = "http://allowed.test";
const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

// ---- A raw HTTP/1.1 exchange, for bytes no HTTP library will send ---------------------

/// A response read off the socket as it came.
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    /// The first header with this name (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Asserts the usual JSON error body with this status and code.
    fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.head);
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{what}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(json["error"]["message"].is_string(), "{what}: {json}");
    }
}

/// Splits raw bytes into status, head and what follows it; `None` before the head is complete.
fn split_response(raw: &[u8]) -> Option<RawResponse> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    Some(RawResponse {
        status,
        head,
        body: raw[head_end + 4..].to_vec(),
    })
}

/// Sends `request` as is; reads the response head and then `Content-Length` bytes of body
/// (none for 101, 204, or when `head_only`), so that a 101 does not leave it waiting.
async fn exchange(addr: SocketAddr, request: &[u8], head_only: bool) -> RawResponse {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut raw = Vec::new();
        let mut resp = loop {
            if let Some(resp) = split_response(&raw) {
                break resp;
            }
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        };
        let status = resp.status;
        let length: usize = resp
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        if !head_only && status != 101 && status != 204 {
            let mut rest = vec![0u8; length.saturating_sub(resp.body.len())];
            tcp.read_exact(&mut rest).await.unwrap();
            resp.body.extend_from_slice(&rest);
        }
        resp
    };
    tokio::time::timeout(WAIT, work)
        .await
        .expect("a response in time")
}

/// A request head with these extra header lines (each ending in CRLF) and no body.
fn request_bytes(method: &str, path: &str, addr: SocketAddr, extra: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    req
}

// ---- Origins ----------------------------------------------------------------------------

#[tokio::test]
async fn origin_headers_that_are_not_origins_are_refused() {
    let server = TestServer::start(common::fast_config()).await;
    // Raw bytes: not visible ASCII, so not a header value `to_str` accepts.
    let bad_origins: [&[u8]; 4] = [
        b"Origin: \xff\xfe\xfd\r\n",
        b"Origin: http://caf\xc3\xa9.test\r\n",
        b"Origin: not an origin\r\n",
        b"Origin: http://allowed.test/path\r\n",
    ];
    for origin in bad_origins {
        let shown = String::from_utf8_lossy(origin).trim().to_owned();
        let api = exchange(
            server.http,
            &request_bytes("GET", "/health", server.http, origin),
            false,
        )
        .await;
        api.assert_error(403, "forbidden", &format!("GET /health with {shown}"));
        assert_eq!(api.header("access-control-allow-origin"), None, "{shown}");

        let preflight = exchange(
            server.http,
            &request_bytes("OPTIONS", "/api/rooms", server.http, origin),
            false,
        )
        .await;
        preflight.assert_error(403, "forbidden", &format!("preflight with {shown}"));

        let mut headers = origin.to_vec();
        headers.extend_from_slice(UPGRADE_HEADERS.as_bytes());
        for (addr, path) in [(server.http, "/ws"), (server.signaling, "/")] {
            let upgrade = exchange(addr, &request_bytes("GET", path, addr, &headers), false).await;
            upgrade.assert_error(403, "forbidden", &format!("upgrade at {path} with {shown}"));
        }
    }

    // Two origins in one request are not one origin either.
    let twice = exchange(
        server.http,
        &request_bytes(
            "GET",
            "/health",
            server.http,
            b"Origin: http://a.test\r\nOrigin: http://b.test\r\n",
        ),
        false,
    )
    .await;
    twice.assert_error(403, "forbidden", "two Origin headers");

    // Real origins, `null` included (sandboxed pages send it), are still served.
    for origin in ["http://allowed.test", "https://[::1]:8443", "null"] {
        let line = format!("Origin: {origin}\r\n");
        let ok = exchange(
            server.http,
            &request_bytes("GET", "/health", server.http, line.as_bytes()),
            false,
        )
        .await;
        assert_eq!(ok.status, 200, "{origin}: {}", ok.head);
        assert_eq!(ok.header("access-control-allow-origin"), Some(origin));
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unparsable_origin_is_refused_even_with_an_origin_list() {
    let server =
        TestServer::start_tweaked(|c| c.cors_origins = CorsOrigins::List(vec![ALLOWED.into()]))
            .await;
    let resp = exchange(
        server.http,
        &request_bytes("GET", "/info", server.http, b"Origin: \xffhttp://x\r\n"),
        false,
    )
    .await;
    resp.assert_error(403, "forbidden", "non-ASCII origin");
    server.stop().await;
}

// ---- Production without an origin list (the real binary) --------------------------------

/// The binary in production mode with a secret, an admin key and TLS left to a proxy,
/// none of the caller's Octate settings, no `.env`, on random loopback ports.
fn production_command() -> Command {
    let mut cmd = server_command();
    cmd.env("OCTATE_ENV", "production")
        .env("OCTATE_TOKEN_SECRET", "binary-test-secret-0123456789abcdef")
        .env("OCTATE_ADMIN_KEY", ADMIN_KEY)
        .env("OCTATE_BEHIND_PROXY", "true")
        .env("HOST", "127.0.0.2")
        .env("PORT", "0")
        .env("SIGNALING_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// How a start of the binary went.
enum Start {
    /// It printed its `listening` line (and was then stopped).
    Listening,
    /// It exited by itself with this code and standard error.
    Exited(Option<i32>, String),
}

/// Starts the binary and tells whether it came up or exited, within ten seconds.
fn try_start(mut cmd: Command) -> Start {
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        for _ in lines {}
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
    if first
        .as_deref()
        .is_some_and(|l| l.starts_with("octate-server listening "))
    {
        let _ = child.kill();
        let _ = child.wait();
        return Start::Listening;
    }
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    Start::Exited(status.code(), err)
}

#[tokio::test]
async fn production_refuses_any_origin_unless_explicitly_allowed() {
    let default = tokio::task::spawn_blocking(|| try_start(production_command()))
        .await
        .unwrap();
    match default {
        Start::Exited(code, err) => {
            assert_eq!(code, Some(2), "stderr: {err}");
            assert!(err.contains("CORS_ORIGINS"), "names the setting: {err}");
            assert!(
                err.contains("OCTATE_ALLOW_ANY_ORIGIN"),
                "names the way out: {err}"
            );
        }
        Start::Listening => panic!("production started with CORS_ORIGINS=*"),
    }

    let starts = |args: &'static [&'static str], env: &'static [(&'static str, &'static str)]| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = production_command();
            cmd.args(args).envs(env.iter().copied());
            try_start(cmd)
        })
    };
    let cases = [
        (
            "OCTATE_ALLOW_ANY_ORIGIN=true",
            starts(&[], &[("OCTATE_ALLOW_ANY_ORIGIN", "true")]),
        ),
        ("--allow-any-origin", starts(&["--allow-any-origin"], &[])),
        (
            "CORS_ORIGINS=<list>",
            starts(&[], &[("CORS_ORIGINS", "https://app.example.com")]),
        ),
    ];
    for (what, start) in cases {
        match start.await.unwrap() {
            Start::Listening => {}
            Start::Exited(code, err) => panic!("{what}: exited with {code:?}: {err}"),
        }
    }
}

// ---- Static files -----------------------------------------------------------------------

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "octate-http-edge-{}-{what}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes that are not all the same, so that a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// One more byte than the old whole-file limit of 16 MiB.
const LARGE: usize = 16 * 1024 * 1024 + 1;

#[tokio::test]
async fn symlinks_that_leave_the_static_dir_are_not_followed() {
    let root = TempDir::new("symlinks");
    let site = root.0.join("site");
    let outside = root.0.join("outside");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(site.join("index.html"), "<p>demo</p>").unwrap();
    std::fs::write(site.join("sub/inner.txt"), "inner").unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), site.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, site.join("leakdir")).unwrap();
    std::os::unix::fs::symlink(site.join("sub/inner.txt"), site.join("alias.txt")).unwrap();

    let static_dir = site.clone();
    let server = TestServer::start_tweaked(move |c| c.static_dir = Some(static_dir)).await;
    for path in ["/leak.txt", "/leakdir/secret.txt", "/leakdir"] {
        for method in ["GET", "HEAD"] {
            let resp = exchange(
                server.http,
                &request_bytes(method, path, server.http, b""),
                method == "HEAD",
            )
            .await;
            assert_eq!(resp.status, 404, "{method} {path}: {}", resp.head);
            if method == "GET" {
                resp.assert_error(404, "not-found", path);
            }
        }
    }
    // A link that stays inside the directory, and ordinary files, are served.
    for (path, body) in [
        ("/alias.txt", "inner"),
        ("/sub/inner.txt", "inner"),
        ("/", "<p>demo</p>"),
    ] {
        let resp = get(server.http, path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.body, body.as_bytes(), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn static_files_larger_than_16_mib_stream_whole_and_head_sends_no_body() {
    let dir = TempDir::new("large");
    let content = pattern(LARGE);
    std::fs::write(dir.0.join("big.wasm"), &content).unwrap();
    let static_dir = dir.0.clone();
    let server = TestServer::start_tweaked(move |c| c.static_dir = Some(static_dir)).await;

    // HEAD: the length from the file's metadata, the type, and not one byte of body.
    let head_request = request_bytes("HEAD", "/big.wasm", server.http, b"Connection: close\r\n");
    let all = tokio::time::timeout(WAIT, async {
        let mut tcp = TcpStream::connect(server.http).await.unwrap();
        tcp.write_all(&head_request).await.unwrap();
        let mut all = Vec::new();
        tcp.read_to_end(&mut all).await.unwrap();
        all
    })
    .await
    .expect("the server closes after the HEAD response");
    let head = split_response(&all).expect("a complete response head");
    assert_eq!(head.status, 200, "{}", head.head);
    assert_eq!(head.header("content-length"), Some(&*LARGE.to_string()));
    assert_eq!(head.header("content-type"), Some("application/wasm"));
    assert!(
        head.body.is_empty(),
        "HEAD sent {} bytes of body",
        head.body.len()
    );

    // GET: every byte, in order, with the length announced up front.
    let got = exchange(
        server.http,
        &request_bytes("GET", "/big.wasm", server.http, b""),
        false,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert_eq!(got.header("content-length"), Some(&*LARGE.to_string()));
    assert_eq!(got.body.len(), LARGE);
    assert!(got.body == content, "the body differs from the file");

    // The connection stays usable for the API after a streamed file.
    let health = get(server.http, "/health").await;
    assert_eq!(health.status, 200);
    server.stop().await;
}

// ---- The upgrade method -----------------------------------------------------------------

#[tokio::test]
async fn websocket_upgrades_must_use_get() {
    let server = TestServer::start(common::fast_config()).await;
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        for (addr, path) in [(server.http, "/ws"), (server.signaling, "/")] {
            let what = format!("{method} {path} with upgrade headers");
            let resp = exchange(
                addr,
                &request_bytes(method, path, addr, UPGRADE_HEADERS.as_bytes()),
                method == "HEAD",
            )
            .await;
            assert_eq!(resp.status, 405, "{what}: {}", resp.head);
            assert_eq!(resp.header("allow"), Some("GET"), "{what}");
            if method != "HEAD" {
                resp.assert_error(405, "method-not-allowed", &what);
            }
        }
    }
    // GET still upgrades.
    let ok = exchange(
        server.signaling,
        &request_bytes("GET", "/", server.signaling, UPGRADE_HEADERS.as_bytes()),
        false,
    )
    .await;
    assert_eq!(ok.status, 101, "{}", ok.head);
    server.stop().await;
}

// ---- The Authorization scheme -----------------------------------------------------------

fn text(resp: &octate_client::HttpResponse) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

#[tokio::test]
async fn the_bearer_scheme_matches_in_any_case() {
    let server = TestServer::start_tweaked(|c| c.admin_key = Some(ADMIN_KEY.to_owned())).await;
    let body = json!({"userId": "alice", "roomId": "room-1"}).to_string();
    let issue = |authorization: String| {
        let body = body.clone();
        async move {
            common::peers::request(
                server.http,
                "POST",
                "/api/auth/token",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &authorization),
                ],
                Some(body.as_bytes()),
            )
            .await
        }
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = issue(format!("{scheme} {ADMIN_KEY}")).await;
        assert_eq!(resp.status, 200, "{scheme}: {}", text(&resp));
        // More than one space between scheme and key is allowed too.
        let resp = issue(format!("{scheme}   {ADMIN_KEY}")).await;
        assert_eq!(resp.status, 200, "{scheme} with spaces: {}", text(&resp));
        let resp = issue(format!("{scheme} wrong-key-0123456789")).await;
        assert_http_error(&resp, 403, "forbidden");
    }
    for not_bearer in [
        format!("Basic {ADMIN_KEY}"),
        format!("Bearer{ADMIN_KEY}"),
        format!("Bearers {ADMIN_KEY}"),
        "Bearer".to_owned(),
        ADMIN_KEY.to_owned(),
    ] {
        let resp = issue(not_bearer.clone()).await;
        assert_http_error(&resp, 401, "unauthorized");
    }
    // The client library's own header still works.
    let resp = post(
        server.http,
        "/api/auth/token",
        &json!({"userId": "bob", "roomId": "room-1"}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(resp.status, 200);
    server.stop().await;
}
