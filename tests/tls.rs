//! TLS on both ports against real TLS clients (rustls; curl and Python's `ssl` against
//! the real binary): HTTPS and WSS, the protocol versions and ALPN offered, a certificate
//! replaced while sessions relay, a bad new pair refused, the handshake timeout, and
//! SIGHUP. Every certificate is made by the test, under a CA of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use octate_test::binary::{RealServer, server_command};
use octate_test::peers::WAIT;
use octate_test::server::{TestServer, fast_config};
use octate_test::tokens::{mint, now_ms};
use octate_test::ws::auth_text;
use octate_transport::Tls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

// ---- Certificates -------------------------------------------------------------------------

/// A CA of the test's own, which signs server certificates for `localhost`.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate and its key, in PEM.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Authority {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "Octate test CA");
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A certificate for `localhost` (and 127.0.0.1) with serial number `serial`.
    fn issue(&self, serial: u64) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        // A subject of its own: OpenSSL takes a certificate whose subject is its
        // issuer's for a self-signed one.
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

/// The serial number of a DER certificate, as an integer.
fn serial(der: &[u8]) -> u64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    u64::try_from(cert.tbs_certificate.serial.clone()).expect("a small serial")
}

/// The certificate and key files a server reads, in a directory of their own.
struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("octate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        }
    }

    /// Replaces both files, each by a rename, as deployment tools do.
    fn write(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(&self.key, key_pem), (&self.cert, cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    fn install(&self, pair: &Pair) {
        self.write(&pair.cert_pem, &pair.key_pem);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- A TLS client -------------------------------------------------------------------------

/// A client trusting `ca` only, speaking `versions`, offering `alpn`.
fn client(
    ca: &Authority,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    // Every connection makes a full handshake: a resumed one shows no certificate.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// The usual client: TLS 1.2 or 1.3, offering `http/1.1`.
fn default_client(ca: &Authority) -> TlsConnector {
    client(ca, rustls::DEFAULT_VERSIONS, &[b"http/1.1"])
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap_or_else(|_| panic!("no TLS handshake with {addr} in {WAIT:?}"))
}

/// The leaf certificate the server presented on `stream`.
fn served_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().expect("the server's certificates")[0].clone()
}

/// An HTTP answer read by hand: status, body, the ALPN protocol and the certificate served.
struct Answer {
    status: u16,
    body: String,
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    leaf: CertificateDer<'static>,
}

/// `GET path` over a new TLS connection, `Connection: close`.
async fn https_get(connector: &TlsConnector, addr: SocketAddr, path: &str) -> Answer {
    let mut stream = tls_connect(connector, addr).await.expect("TLS handshake");
    let (alpn, version) = {
        let (_, conn) = stream.get_ref();
        (
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.protocol_version(),
        )
    };
    let leaf = served_leaf(&stream);
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the answer in time")
        .expect("the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Answer {
        status,
        body: body.to_owned(),
        alpn,
        version,
        leaf,
    }
}

/// The value of the metric line starting with `name` (labels included), 0 when absent.
async fn metric(connector: &TlsConnector, addr: SocketAddr, name: &str) -> f64 {
    let answer = https_get(connector, addr, "/metrics").await;
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A WSS session at `addr` + `path`, authenticated as `user` in `room`; also the leaf
/// certificate it was opened with.
async fn wss_join(
    connector: &TlsConnector,
    addr: SocketAddr,
    path: &str,
    user: &str,
    room: &str,
) -> (Wss, CertificateDer<'static>) {
    let stream = tls_connect(connector, addr).await.expect("TLS handshake");
    let leaf = served_leaf(&stream);
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("WebSocket upgrade over TLS");
    let token = mint(user, room, now_ms());
    ws.send(Message::text(auth_text(&token))).await.unwrap();
    expect_text(&mut ws, user, "\"auth-ok\"").await;
    (ws, leaf)
}

/// Reads messages until one contains `needle`; panics after [`WAIT`].
async fn expect_text(ws: &mut Wss, who: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: nothing with {needle} in {WAIT:?}"));
        match next {
            Some(Ok(Message::Text(text))) if text.contains(needle) => return text.to_string(),
            Some(Ok(_)) => {}
            other => panic!("{who}: expected {needle}, the session ended: {other:?}"),
        }
    }
}

/// A server with TLS from `files`, and fast timers.
async fn tls_server(tls: &Tls) -> TestServer {
    let mut config = fast_config();
    config.tls = Some(tls.clone());
    TestServer::start(config).await
}

/// Polls new connections until the server presents `want`, within [`WAIT`].
async fn until_served(connector: &TlsConnector, addr: SocketAddr, want: &CertificateDer<'_>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = https_get(connector, addr, "/health").await;
        if answer.leaf == *want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still serving serial {} after {WAIT:?}",
            serial(&answer.leaf)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- In-process servers -------------------------------------------------------------------

#[tokio::test]
async fn https_and_wss_on_both_ports() {
    let ca = Authority::new();
    let files = Files::new("both-ports");
    let pair = ca.issue(1);
    files.install(&pair);
    let tls = Tls::load(&files.cert, &files.key).unwrap();
    let server = tls_server(&tls).await;
    let connector = default_client(&ca);

    for addr in [server.http, server.signaling] {
        let answer = https_get(&connector, addr, "/health").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.contains("\"status\""), "{}", answer.body);
        assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(answer.leaf, pair.der);
    }

    // WSS: on the signaling port at any path, on the HTTP port at /ws; they relay.
    let (mut alice, _) = wss_join(&connector, server.signaling, "/", "alice", "r").await;
    let (mut bob, _) = wss_join(&connector, server.http, "/ws", "bob", "r").await;
    expect_text(&mut alice, "alice", "\"peer-joined\"").await;
    let offer =
        r#"{"type":"sdp-offer","data":{"peer":"bob","offer":{"type":"offer","sdp":"v=0"}}}"#;
    alice.send(Message::text(offer)).await.unwrap();
    let relayed = expect_text(&mut bob, "bob", "\"sdp-offer\"").await;
    assert!(relayed.contains("alice"), "{relayed}");

    // Plain HTTP on a TLS port gets no answer, and the failed handshake is counted.
    let before = metric(
        &connector,
        server.http,
        "octate_tls_handshake_failures_total{reason=\"error\"}",
    )
    .await;
    let plain = octate_client::http_request(server.http, "GET", "/health", &[], None);
    let plain = tokio::time::timeout(WAIT, plain)
        .await
        .expect("ends in time");
    assert!(plain.is_err(), "plain HTTP was answered on a TLS port");
    let after = metric(
        &connector,
        server.http,
        "octate_tls_handshake_failures_total{reason=\"error\"}",
    )
    .await;
    assert_eq!(after, before + 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_burst_beyond_the_socket_buffers_arrives_whole_and_in_order_over_tls() {
    let ca = Authority::new();
    let files = Files::new("burst");
    files.install(&ca.issue(1));
    let tls = Tls::load(&files.cert, &files.key).unwrap();
    let mut config = fast_config();
    config.tls = Some(tls);
    config.outbound_queue_bytes = 32 * 1024 * 1024;
    // No heartbeat to write behind the burst: what is left must go out by itself.
    config.core.heartbeat_interval = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let connector = default_client(&ca);
    let (mut alice, _) = wss_join(&connector, server.signaling, "/", "alice", "r").await;
    let (mut bob, _) = wss_join(&connector, server.signaling, "/", "bob", "r").await;
    expect_text(&mut alice, "alice", "\"peer-joined\"").await;

    // Bob reads nothing while 150 offers of 60 KB (9 MB) are queued for him: more than
    // the sockets hold, so the server's TLS writes wait for room again and again.
    let sdp = "x".repeat(60_000);
    for i in 0..150 {
        let offer = format!(
            r#"{{"type":"sdp-offer","data":{{"peer":"bob","offer":{{"type":"offer","sdp":"{i} {sdp}"}}}}}}"#
        );
        alice.send(Message::text(offer)).await.unwrap();
    }
    for i in 0..150 {
        let text = expect_text(&mut bob, "bob", "\"sdp-offer\"").await;
        assert!(text.contains(&format!("\"{i} x")), "offer {i} in its place");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_server_closes_a_wss_session_with_its_close_code() {
    let ca = Authority::new();
    let files = Files::new("close");
    files.install(&ca.issue(1));
    let tls = Tls::load(&files.cert, &files.key).unwrap();
    let server = tls_server(&tls).await;
    let connector = default_client(&ca);
    let stream = tls_connect(&connector, server.signaling).await.unwrap();
    let url = format!("wss://localhost:{}/", server.signaling.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws.send(Message::text(auth_text("not-a-token")))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let code = loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(4001));
    // The server then ends the TLS stream: the client sees the end in time.
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the end in time");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    server.stop().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_with_alpn_http_1_1_only() {
    let ca = Authority::new();
    let files = Files::new("versions");
    files.install(&ca.issue(1));
    let tls = Tls::load(&files.cert, &files.key).unwrap();
    let server = tls_server(&tls).await;

    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let connector = client(&ca, &[version], &[b"h2", b"http/1.1"]);
        let answer = https_get(&connector, server.http, "/health").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.version, Some(want));
        assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]), "never h2");
    }
    // Without ALPN the server speaks HTTP/1.1 all the same.
    let answer = https_get(
        &client(&ca, rustls::DEFAULT_VERSIONS, &[]),
        server.http,
        "/health",
    )
    .await;
    assert_eq!((answer.status, answer.alpn), (200, None));
    // A client that only speaks HTTP/2 is refused.
    let h2 = client(&ca, rustls::DEFAULT_VERSIONS, &[b"h2"]);
    assert!(tls_connect(&h2, server.http).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_new_certificate_serves_new_connections_while_old_sessions_relay() {
    let ca = Authority::new();
    let files = Files::new("reload");
    let first = ca.issue(1);
    files.install(&first);
    let tls = Tls::load(&files.cert, &files.key).unwrap();
    let watcher = tokio::spawn(tls.clone().watch(Duration::from_millis(50)));
    let server = tls_server(&tls).await;
    let connector = default_client(&ca);

    let (mut alice, alice_cert) = wss_join(&connector, server.signaling, "/", "alice", "r").await;
    let (mut bob, bob_cert) = wss_join(&connector, server.signaling, "/", "bob", "r").await;
    assert_eq!((serial(&alice_cert), serial(&bob_cert)), (1, 1));
    expect_text(&mut alice, "alice", "\"peer-joined\"").await;

    // The files change (as a renewal would write them); the watcher picks them up.
    let second = ca.issue(2);
    files.install(&second);
    until_served(&connector, server.http, &second.der).await;
    let answer = https_get(&connector, server.signaling, "/health").await;
    assert_eq!(
        serial(&answer.leaf),
        2,
        "both ports serve the new certificate"
    );

    // The sessions opened under the old certificate go on relaying, both ways.
    let offer =
        r#"{"type":"sdp-offer","data":{"peer":"bob","offer":{"type":"offer","sdp":"v=0"}}}"#;
    alice.send(Message::text(offer)).await.unwrap();
    expect_text(&mut bob, "bob", "\"sdp-offer\"").await;
    let answer_msg =
        r#"{"type":"sdp-answer","data":{"peer":"alice","answer":{"type":"answer","sdp":"v=0"}}}"#;
    bob.send(Message::text(answer_msg)).await.unwrap();
    expect_text(&mut alice, "alice", "\"sdp-answer\"").await;

    // A new session gets the new certificate and joins the old ones.
    let (_carol, carol_cert) = wss_join(&connector, server.http, "/ws", "carol", "r").await;
    assert_eq!(serial(&carol_cert), 2);
    expect_text(&mut alice, "alice", "\"peer-joined\"").await;
    watcher.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_bad_new_pair_is_refused_and_the_old_one_keeps_serving() {
    let ca = Authority::new();
    let files = Files::new("bad-pair");
    let good = ca.issue(1);
    files.install(&good);
    let tls = Tls::load(&files.cert, &files.key).unwrap();
    let watcher = tokio::spawn(tls.clone().watch(Duration::from_millis(50)));
    let server = tls_server(&tls).await;
    let connector = default_client(&ca);
    let (mut alice, _) = wss_join(&connector, server.signaling, "/", "alice", "r").await;

    // A new certificate with the old key: the key does not match.
    let next = ca.issue(2);
    files.write(&next.cert_pem, &good.key_pem);
    let err = tls.reload().expect_err("a mismatched pair is refused");
    assert!(err.to_string().contains("does not belong"), "{err}");
    // Give the watcher several looks at the bad files.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for addr in [server.http, server.signaling] {
        let answer = https_get(&connector, addr, "/health").await;
        assert_eq!((answer.status, serial(&answer.leaf)), (200, 1));
    }
    // Nor does a truncated file replace anything.
    files.write("-----BEGIN CERTIFICATE-----\nMIIB", &next.key_pem);
    assert!(tls.reload().is_err());
    let (_bob, bob_cert) = wss_join(&connector, server.http, "/ws", "bob", "r").await;
    assert_eq!(serial(&bob_cert), 1);
    expect_text(&mut alice, "alice", "\"peer-joined\"").await;

    // Once the pair is whole, it is served.
    files.install(&next);
    until_served(&connector, server.http, &next.der).await;
    watcher.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_dropped_within_the_timeout() {
    let ca = Authority::new();
    let files = Files::new("timeout");
    files.install(&ca.issue(1));
    let tls = Tls::load(&files.cert, &files.key)
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(300));
    let server = tls_server(&tls).await;
    let connector = default_client(&ca);

    let mut silent = TcpStream::connect(server.signaling).await.unwrap();
    // A half-sent ClientHello stalls the same way.
    let mut stalled = TcpStream::connect(server.http).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    // Meanwhile other clients are served: the stalled handshakes hold no worker.
    let answer = https_get(&connector, server.http, "/health").await;
    assert_eq!(answer.status, 200);

    for (who, tcp) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{who}: still open after 3 s"));
        assert!(matches!(read, Ok(0) | Err(_)), "{who}: {read:?}");
    }
    let timeouts = metric(
        &connector,
        server.http,
        "octate_tls_handshake_failures_total{reason=\"timeout\"}",
    )
    .await;
    assert_eq!(timeouts, 2.0);
    server.stop().await;
}

// ---- The real binary: production with TLS, SIGHUP, curl and Python -------------------------

/// `curl --cacert` against the binary (which listens on 127.0.0.2) under the name `localhost`.
fn curl(ca: &Path, addr: SocketAddr, path: &str) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{}:{}", addr.port(), addr.ip()))
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The serial number (decimal), TLS version and ALPN protocol of the certificate Python's `ssl` sees at `addr`, verified
/// against `ca` for `localhost`.
fn python_serial(ca: &Path, addr: SocketAddr) -> String {
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5) as sock:
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        print(int(tls.getpeercert()["serialNumber"], 16), tls.version(), tls.selected_alpn_protocol())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(ca)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python ssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_binary_serves_tls_in_production_and_reloads_on_sighup() {
    let ca = Authority::new();
    let files = Files::new("binary");
    let ca_path = files.path("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    files.install(&ca.issue(0x51));

    let mut cmd = server_command();
    cmd.env("OCTATE_ENV", "production")
        .env("OCTATE_ADMIN_KEY", "binary-admin-key-0123456789")
        .env("CORS_ORIGINS", "https://app.example.com")
        .env("OCTATE_TLS_CERT", &files.cert)
        .env("OCTATE_TLS_KEY", &files.key)
        // Only SIGHUP reloads here: the file watcher is tested in-process.
        .env("OCTATE_TLS_RELOAD_CHECK_MS", "0");
    let server = tokio::task::spawn_blocking(move || {
        RealServer::start_command(cmd, "binary-test-secret-0123456789abcdef")
    })
    .await
    .unwrap();
    let (http, signaling) = (server.http, server.signaling);
    let ca_file = ca_path.clone();
    let (health, seen) = tokio::task::spawn_blocking(move || {
        (
            curl(&ca_file, http, "/health"),
            python_serial(&ca_file, signaling),
        )
    })
    .await
    .unwrap();
    assert!(health.contains("\"status\""), "{health}");
    assert!(seen.starts_with("81 "), "serial 0x51 (81): {seen}");
    assert!(
        seen.contains(" TLSv1.3 ") || seen.contains(" TLSv1.2 "),
        "{seen}"
    );

    // A bad pair and SIGHUP: refused, the old one stays, the server lives on.
    let next = ca.issue(0x52);
    files.write(&next.cert_pem, "not a key");
    server.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ca_file = ca_path.clone();
    let seen = tokio::task::spawn_blocking(move || python_serial(&ca_file, http))
        .await
        .unwrap();
    assert!(seen.starts_with("81 "), "the old certificate stays: {seen}");

    // The whole pair and SIGHUP: new connections get it.
    files.install(&next);
    server.signal("-HUP");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ca_file = ca_path.clone();
        let seen = tokio::task::spawn_blocking(move || python_serial(&ca_file, http))
            .await
            .unwrap();
        if seen.starts_with("82 ") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {seen} after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca_file = ca_path.clone();
    let health = tokio::task::spawn_blocking(move || curl(&ca_file, signaling, "/health"))
        .await
        .unwrap();
    assert!(health.contains("\"status\""), "{health}");
    drop(server);
}

#[tokio::test]
async fn sighup_without_tls_is_not_fatal() {
    let server =
        tokio::task::spawn_blocking(|| RealServer::start("binary-test-secret-0123456789abcdef"))
            .await
            .unwrap();
    server.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = octate_test::peers::get(server.http, "/health").await;
    assert_eq!(resp.status, 200, "the server lives on after SIGHUP");
    drop(server);
}
