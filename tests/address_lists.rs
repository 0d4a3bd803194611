//! Address lists and trusted proxies, from several loopback source addresses (Linux
//! answers on all of 127/8): refusals at accept before any parsing, on the HTTP and the
//! signaling port alike; the admin endpoints' own list; `X-Forwarded-For` believed only
//! from trusted proxies, for the lists and the per-address connection limit.

use std::net::{IpAddr, SocketAddr};

use octate_auth::TokenAuthority;
use octate_test::peers::WAIT;
use octate_test::server::TestServer;
use octate_test::server::fast_config;
use octate_test::ws::RawWs;
use octate_transport::{AddressList, App, Listeners, RssProbe, TransportConfig, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn list(s: &str) -> AddressList {
    AddressList::parse(s).unwrap()
}

/// What a request got.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// An HTTP answer: status and body.
    Answer(u16, String),
    /// The connection ended without a byte.
    Closed,
}

impl Reply {
    fn status(&self) -> Option<u16> {
        match self {
            Self::Answer(status, _) => Some(*status),
            Self::Closed => None,
        }
    }
}

/// Sends `request` from `source` and reads the answer's head and body; the socket is
/// returned too, for upgrades that must stay open.
async fn exchange(source: IpAddr, addr: SocketAddr, request: &[u8]) -> (Reply, TcpStream) {
    let mut tcp = RawWs::tcp_from(source, addr).await;
    // A refused socket may be closed before the request is written: that is a refusal too.
    let _ = tcp.write_all(request).await;
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer from {addr} to {source} in {WAIT:?}"));
        match read {
            Ok(0) | Err(_) if buf.is_empty() => return (Reply::Closed, tcp),
            Ok(0) | Err(_) => panic!("cut answer: {}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    (Reply::Answer(status, body), tcp)
}

fn get(path: &str, forwarded: Option<&str>) -> Vec<u8> {
    let xff = forwarded.map_or(String::new(), |f| format!("x-forwarded-for: {f}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: octate\r\nconnection: close\r\n{xff}\r\n").into_bytes()
}

fn post_token(forwarded: Option<&str>) -> Vec<u8> {
    let body = r#"{"userId":"alice","roomId":"r"}"#;
    let xff = forwarded.map_or(String::new(), |f| format!("x-forwarded-for: {f}\r\n"));
    format!(
        "POST /api/auth/token HTTP/1.1\r\nhost: octate\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n{xff}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A WebSocket upgrade at `/ws` (the HTTP port upgrades there, the signaling port anywhere).
fn upgrade(forwarded: Option<&str>) -> Vec<u8> {
    let xff = forwarded.map_or(String::new(), |f| format!("x-forwarded-for: {f}\r\n"));
    format!(
        "GET /ws HTTP/1.1\r\nhost: octate\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{xff}\r\n"
    )
    .into_bytes()
}

async fn start(tweak: impl FnOnce(&mut TransportConfig)) -> TestServer {
    TestServer::start_tweaked(tweak).await
}

/// The value of the metric line `name` (labels included), 0 when absent.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let resp = octate_test::peers::get(server.http, "/metrics").await;
    String::from_utf8_lossy(&resp.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn lists_refuse_at_accept_before_any_parsing_on_both_ports() {
    // 127.0.0.0/30 may connect, except 127.0.0.3: deny wins.
    let server = start(|c| {
        c.access.allow = list("127.0.0.0/30, 2001:db8::/32");
        c.access.deny = list("127.0.0.3");
    })
    .await;
    for addr in [server.http, server.signaling] {
        let (reply, _) = exchange(ip("127.0.0.2"), addr, &get("/health", None)).await;
        assert_eq!(reply.status(), Some(200), "{reply:?}");
        let (reply, _) = exchange(ip("127.0.0.2"), addr, &upgrade(None)).await;
        assert_eq!(reply.status(), Some(101), "{reply:?}");

        for refused in ["127.0.0.3", "127.0.0.5", "127.0.1.1"] {
            let (reply, _) = exchange(ip(refused), addr, &get("/health", None)).await;
            assert_eq!(reply, Reply::Closed, "{refused} on {addr}");
            let (reply, _) = exchange(ip(refused), addr, &upgrade(None)).await;
            assert_eq!(reply, Reply::Closed, "{refused} upgrading on {addr}");
        }
    }
    // Garbage is answered with a 400 when it is parsed; from a refused address it is not.
    let garbage = b"\x16\x03\x01 not http at all\r\n\r\n";
    let (reply, _) = exchange(ip("127.0.0.1"), server.http, garbage).await;
    assert_eq!(reply.status(), Some(400), "{reply:?}");
    let (reply, _) = exchange(ip("127.0.0.3"), server.http, garbage).await;
    assert_eq!(reply, Reply::Closed);

    // 127.0.0.3 tried 5 times (2 ports x 2 + garbage); the others 2 x 2 each.
    assert_eq!(
        metric(&server, "octate_address_refusals_total{list=\"deny\"}").await,
        5
    );
    assert_eq!(
        metric(&server, "octate_address_refusals_total{list=\"allow\"}").await,
        8
    );
    server.stop().await;
}

#[tokio::test]
async fn the_admin_endpoints_have_a_list_of_their_own() {
    let server = start(|c| c.access.admin_allow = list("127.0.0.1, ::1")).await;
    let (reply, _) = exchange(ip("127.0.0.1"), server.http, &post_token(None)).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    let (reply, _) = exchange(ip("127.0.0.2"), server.http, &post_token(None)).await;
    let Reply::Answer(403, body) = &reply else {
        panic!("expected 403, got {reply:?}");
    };
    assert!(
        body.contains("\"forbidden\"") && body.contains("admin"),
        "{body}"
    );
    // The rest of the API and signaling stay open to 127.0.0.2.
    let (reply, _) = exchange(ip("127.0.0.2"), server.http, &get("/health", None)).await;
    assert_eq!(reply.status(), Some(200));
    let (reply, _) = exchange(ip("127.0.0.2"), server.signaling, &upgrade(None)).await;
    assert_eq!(reply.status(), Some(101));
    assert_eq!(
        metric(&server, "octate_address_refusals_total{list=\"admin\"}").await,
        1
    );
    server.stop().await;

    // With an admin key, the right key from outside the list is still refused.
    let key = "admin-key-0123456789";
    let server = start(|c| {
        c.access.admin_allow = list("127.0.0.1");
        c.admin_key = Some(key.into());
    })
    .await;
    let mut request = post_token(None);
    let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    request.splice(
        at..at,
        format!("authorization: Bearer {key}\r\n").into_bytes(),
    );
    let (reply, _) = exchange(ip("127.0.0.2"), server.http, &request).await;
    assert_eq!(reply.status(), Some(403), "{reply:?}");
    let (reply, _) = exchange(ip("127.0.0.1"), server.http, &request).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    server.stop().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let server = start(|c| {
        c.access.behind_proxy = true;
        c.access.trusted_proxies = list("127.0.0.2");
        c.access.deny = list("203.0.113.0/24");
        c.access.admin_allow = list("198.51.100.1");
        c.max_connections_per_ip = 1;
    })
    .await;
    let proxy = ip("127.0.0.2");
    let stranger = ip("127.0.0.4");

    // Through the proxy, the lists judge the client it names.
    let (reply, _) = exchange(proxy, server.http, &get("/health", Some("203.0.113.9"))).await;
    assert_eq!(reply.status(), Some(403), "denied client: {reply:?}");
    let (reply, _) = exchange(proxy, server.http, &get("/health", Some("198.51.100.7"))).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    // The client may write anything on the left; the right-most untrusted hop counts.
    let spoofed = Some("198.51.100.1, 203.0.113.9");
    let (reply, _) = exchange(proxy, server.http, &get("/health", spoofed)).await;
    assert_eq!(reply.status(), Some(403), "{reply:?}");
    let (reply, _) = exchange(proxy, server.http, &post_token(Some("198.51.100.1"))).await;
    assert_eq!(
        reply.status(),
        Some(200),
        "admin client through the proxy: {reply:?}"
    );
    let spoofed_admin = Some("198.51.100.1, 198.51.100.7");
    let (reply, _) = exchange(proxy, server.http, &post_token(spoofed_admin)).await;
    assert_eq!(reply.status(), Some(403), "{reply:?}");

    // From anyone else the header is ignored: the peer is the client.
    let (reply, _) = exchange(stranger, server.http, &get("/health", Some("203.0.113.9"))).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    let (reply, _) = exchange(stranger, server.http, &post_token(Some("198.51.100.1"))).await;
    assert_eq!(reply.status(), Some(403), "{reply:?}");

    // One connection per client address: the proxy's clients each get theirs...
    let (first, _a) = exchange(proxy, server.signaling, &upgrade(Some("198.51.100.7"))).await;
    let (second, _b) = exchange(proxy, server.signaling, &upgrade(Some("198.51.100.8"))).await;
    let (again, _c) = exchange(proxy, server.signaling, &upgrade(Some("198.51.100.7"))).await;
    assert_eq!(
        (first.status(), second.status(), again.status()),
        (Some(101), Some(101), Some(429))
    );
    // ...and a stranger's header buys it no second one.
    let (first, _d) = exchange(stranger, server.signaling, &upgrade(Some("198.51.100.9"))).await;
    let (second, _e) = exchange(stranger, server.signaling, &upgrade(Some("198.51.100.10"))).await;
    assert_eq!((first.status(), second.status()), (Some(101), Some(429)));
    server.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_is_checked_at_accept_even_behind_a_proxy() {
    let server = start(|c| {
        c.access.behind_proxy = true;
        c.access.trusted_proxies = list("127.0.0.2");
        c.access.allow = list("198.51.100.0/24");
    })
    .await;
    // The proxy itself is outside the allow list, yet passes: its clients are judged.
    let (reply, _) = exchange(
        ip("127.0.0.2"),
        server.http,
        &get("/health", Some("198.51.100.7")),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    let (reply, _) = exchange(ip("127.0.0.2"), server.http, &get("/health", None)).await;
    assert_eq!(
        reply.status(),
        Some(403),
        "no header: the proxy is the client: {reply:?}"
    );
    // Anyone else outside the list is closed unread, whatever it claims.
    let (reply, _) = exchange(
        ip("127.0.0.4"),
        server.http,
        &get("/health", Some("198.51.100.7")),
    )
    .await;
    assert_eq!(reply, Reply::Closed);
    server.stop().await;
}

/// A server on IPv6 loopback (`[::1]`, HTTP port only) with `config`; stops when the
/// returned sender is dropped.
async fn start_v6(config: TransportConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let http = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let app = App::new(
        config,
        TokenAuthority::new(octate_auth::KeyRing::generate().unwrap()),
        Box::new(RssProbe),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = Listeners {
        http,
        signaling: None,
    };
    tokio::spawn(serve(listeners, app, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A GET from `::1` to `addr`.
async fn get_v6(addr: SocketAddr) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(&get("/health", None)).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "no answer in {WAIT:?}");
    let text = String::from_utf8_lossy(&raw);
    match text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => Reply::Answer(status, text.into_owned()),
        None => Reply::Closed,
    }
}

#[tokio::test]
async fn ipv6_peers_are_judged_by_ipv6_networks() {
    for (allow, deny, want) in [
        ("", "", Some(200)),
        ("::1/128", "", Some(200)),
        ("2001:db8::/32", "", None),
        ("", "::/0", None),
        ("::1", "::1", None),
        ("127.0.0.0/8", "", None),
    ] {
        let mut config = fast_config();
        config.access.allow = list(allow);
        config.access.deny = list(deny);
        let (addr, stop) = start_v6(config).await;
        let reply = get_v6(addr).await;
        assert_eq!(
            reply.status(),
            want,
            "allow {allow:?} deny {deny:?}: {reply:?}"
        );
        drop(stop);
    }
}
