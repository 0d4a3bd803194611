//! The two protocols the generator speaks: Octate's and matchbox_server's.
//!
//! Messages are built as text and recognized by cheap prefix checks; timestamps ride in
//! the relayed payload as its last field, `"t":<µs>`, and are found by a reverse search.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use octate_auth::{KeyRing, TokenAuthority};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::Res;
use crate::net::{Dialer, Ws};
use crate::nodes::Nodes;

/// Issues Octate tokens before a run: signed locally, or fetched over HTTP.
pub(crate) struct Minter {
    authority: Option<TokenAuthority>,
    http: SocketAddr,
    admin_key: Option<String>,
}

impl Minter {
    pub(crate) fn new(
        secret: Option<&str>,
        key_id: &str,
        http: SocketAddr,
        admin_key: Option<String>,
    ) -> Res<Self> {
        let authority = match secret {
            Some(secret) => Some(TokenAuthority::new(KeyRing::new(
                key_id,
                secret.as_bytes(),
            )?)),
            None => None,
        };
        Ok(Self {
            authority,
            http,
            admin_key,
        })
    }

    /// A token for `user` in `room`, valid for an hour; fetched from `via` (default:
    /// `--http`) when there is no secret.
    pub(crate) async fn mint(
        &self,
        user: &str,
        room: &str,
        via: Option<SocketAddr>,
    ) -> Res<String> {
        match &self.authority {
            Some(authority) => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis();
                let (token, _) = authority.issue(user, room, None, u64::try_from(now_ms)?)?;
                Ok(token)
            }
            None => Ok(octate_client::fetch_token(
                via.unwrap_or(self.http),
                user,
                room,
                self.admin_key.as_deref(),
            )
            .await?),
        }
    }

    /// Tokens for many peers, in order, each from its own node when fetched over HTTP.
    pub(crate) async fn mint_all(&self, names: &[Name], nodes: &Nodes) -> Res<Vec<String>> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let via = nodes.node(name.node).http;
            out.push(self.mint(&name.user, &name.room, via).await?);
        }
        Ok(out)
    }
}

/// The protocol of the server under test.
pub(crate) enum Proto {
    /// Octate: token auth, rooms from tokens, peers named by user id.
    Octate(Box<Minter>),
    /// matchbox_server: room = URL path, peers named by the uuid the server assigns.
    Matchbox,
}

/// What a server message is, as far as the scenarios care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A relayed signal (Octate `sdp-*`/`ice-candidate`, matchbox `Signal`).
    Signal,
    /// A relayed room update (Octate `presence`/`cursor-update`).
    Update,
    /// Octate `heartbeat`: answer with `pong`.
    Heartbeat,
    /// Octate `error`.
    Error,
    /// Anything else (peer-joined, NewPeer, …).
    Other,
}

/// A joined peer.
pub(crate) struct Joined {
    pub(crate) ws: Ws,
    /// How other peers address it: the user id (Octate) or the assigned uuid (matchbox).
    pub(crate) id: String,
    /// From the start of the TCP connect to `auth-ok` / `IdAssigned`.
    pub(crate) took: Duration,
}

/// How long to wait for `auth-ok` / `IdAssigned`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

impl Proto {
    pub(crate) fn minter(&self) -> Option<&Minter> {
        match self {
            Self::Octate(m) => Some(m),
            Self::Matchbox => None,
        }
    }

    /// Tokens for peers (Octate); matchbox needs none.
    pub(crate) async fn tokens(&self, names: &[Name], nodes: &Nodes) -> Res<Vec<Option<String>>> {
        match self.minter() {
            Some(m) => Ok(m
                .mint_all(names, nodes)
                .await?
                .into_iter()
                .map(Some)
                .collect()),
            None => Ok(vec![None; names.len()]),
        }
    }

    /// Connects and enters `room`: Octate sends `auth` and waits for `auth-ok`; matchbox
    /// dials `/room` and waits for `IdAssigned`.
    pub(crate) async fn join(
        &self,
        dialer: &Dialer,
        room: &str,
        user: &str,
        token: Option<&str>,
    ) -> Res<Joined> {
        let began = std::time::Instant::now();
        match self {
            Self::Octate(_) => {
                let mut ws = dialer.dial("/").await?;
                // No token: stay unauthenticated (idle --no-auth, to weigh the transport alone).
                let Some(token) = token else {
                    return Ok(Joined {
                        ws,
                        id: user.to_owned(),
                        took: began.elapsed(),
                    });
                };
                let auth = format!(r#"{{"type":"auth","data":{{"token":"{token}"}}}}"#);
                ws.send(Message::text(auth)).await?;
                let text = next_text(&mut ws, JOIN_TIMEOUT, |t| {
                    !t.starts_with(r#"{"type":"heartbeat""#)
                })
                .await?;
                if text.starts_with(r#"{"type":"auth-ok""#) {
                    Ok(Joined {
                        ws,
                        id: user.to_owned(),
                        took: began.elapsed(),
                    })
                } else {
                    Err(format!("expected auth-ok, got {}", clip(&text)).into())
                }
            }
            Self::Matchbox => {
                let mut ws = dialer.dial(&format!("/{room}")).await?;
                let text = next_text(&mut ws, JOIN_TIMEOUT, |_| true).await?;
                let id = text
                    .strip_prefix(r#"{"IdAssigned":""#)
                    .and_then(|rest| rest.split('"').next())
                    .ok_or_else(|| format!("expected IdAssigned, got {}", clip(&text)))?;
                Ok(Joined {
                    id: id.to_owned(),
                    ws,
                    took: began.elapsed(),
                })
            }
        }
    }

    /// A signal for peer `to`. `kind` is `sdp-offer`, `sdp-answer` or `ice-candidate`;
    /// `body` is the JSON value under `offer` / `answer` / `candidate`.
    pub(crate) fn signal(&self, to: &str, kind: &str, body: &str) -> String {
        let mut text = self.signal_head(to, kind);
        text.push_str(body);
        text.push_str(self.signal_tail());
        text
    }

    /// The text of a signal up to its body: [`Proto::signal`] is this, the body, then
    /// [`Proto::signal_tail`]. Lets hot loops build each message in one allocation.
    pub(crate) fn signal_head(&self, to: &str, kind: &str) -> String {
        let field = match kind {
            "sdp-offer" => "offer",
            "sdp-answer" => "answer",
            _ => "candidate",
        };
        match self {
            Self::Octate(_) => format!(r#"{{"type":"{kind}","data":{{"peer":"{to}","{field}":"#),
            Self::Matchbox => format!(r#"{{"Signal":{{"receiver":"{to}","data":{{"{field}":"#),
        }
    }

    /// What closes a signal after its body (see [`Proto::signal_head`]).
    pub(crate) fn signal_tail(&self) -> &'static str {
        match self {
            Self::Octate(_) => "}}",
            Self::Matchbox => "}}}",
        }
    }

    /// What a server text message is.
    pub(crate) fn classify(&self, text: &str) -> Incoming {
        match self {
            Self::Octate(_) => {
                let Some(kind) = text.strip_prefix(r#"{"type":""#) else {
                    return Incoming::Other;
                };
                if kind.starts_with("sdp-") || kind.starts_with("ice-") {
                    Incoming::Signal
                } else if kind.starts_with("cursor-update") || kind.starts_with("presence") {
                    Incoming::Update
                } else if kind.starts_with("heartbeat") {
                    Incoming::Heartbeat
                } else if kind.starts_with("error") {
                    Incoming::Error
                } else {
                    Incoming::Other
                }
            }
            Self::Matchbox => {
                if text.starts_with(r#"{"Signal":"#) {
                    Incoming::Signal
                } else {
                    Incoming::Other
                }
            }
        }
    }

    /// The answer to a server heartbeat, if this protocol has one.
    pub(crate) fn pong(&self) -> Option<&'static str> {
        match self {
            Self::Octate(_) => Some(r#"{"type":"pong"}"#),
            Self::Matchbox => None,
        }
    }
}

/// The next text message accepted by `want`, within `wait`.
pub(crate) async fn next_text(
    ws: &mut Ws,
    wait: Duration,
    want: impl Fn(&str) -> bool,
) -> Res<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "timed out waiting for the server")?;
        match msg {
            None => return Err("connection closed".into()),
            Some(Err(err)) => return Err(err.into()),
            Some(Ok(Message::Text(text))) => {
                if want(text.as_str()) {
                    return Ok(text.as_str().to_owned());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server: {frame:?}").into());
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The number after the last `"key":` in `text`.
///
/// The relayed messages carry their stamps at the end, so the search runs backwards
/// over bytes and stops at the first match.
pub(crate) fn last_u64(text: &str, key: &str) -> Option<u64> {
    if key.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let at = bytes
        .windows(key.len())
        .rposition(|w| w == key.as_bytes())?
        + key.len();
    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    text.get(at..at + digits)?.parse().ok()
}

/// Appends the decimal digits of `n` to `out`, as `format!("{n}")` would, without the
/// formatting machinery.
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // Invariant: `n % 10` is a single digit.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// The first 120 characters, for error messages.
pub(crate) fn clip(text: &str) -> &str {
    match text.char_indices().nth(120) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A realistic SDP text of about `len` bytes, already escaped for a JSON string.
pub(crate) fn sdp_text(len: usize, kind: &str) -> String {
    let mut sdp = format!(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n\
         a=group:BUNDLE 0\\r\\na=extmap-allow-mixed\\r\\na=msid-semantic: WMS\\r\\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\nc=IN IP4 0.0.0.0\\r\\n\
         a=ice-ufrag:Qx7B\\r\\na=ice-pwd:Jr4vd8JYp3WlkPmzsbzL1tq0\\r\\na=ice-options:trickle\\r\\n\
         a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\\r\\n\
         a=setup:{}\\r\\na=mid:0\\r\\na=sctp-port:5000\\r\\na=max-message-size:262144\\r\\n",
        if kind == "offer" { "actpass" } else { "active" }
    );
    let mut n = 1u32;
    while sdp.len() < len {
        sdp.push_str(&format!(
            "a=candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host generation 0 network-id 1\\r\\n",
            50_000 + n
        ));
        n += 1;
    }
    sdp.truncate(len.max(16));
    // Never end on a lone backslash (half an escape).
    while sdp.ends_with('\\') {
        sdp.pop();
    }
    sdp
}

/// Sends a text message; the error says the connection is gone.
pub(crate) async fn send_text(ws: &mut Ws, text: impl Into<Utf8Bytes>) -> Res<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Closes politely, waiting at most `wait` for the server's close and end of stream, so
/// the server, not the client, is the side that closes TCP first.
pub(crate) async fn close(mut ws: Ws, wait: Duration) {
    let _ = tokio::time::timeout(wait, async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Who a peer is and which node it connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub(crate) user: String,
    pub(crate) room: String,
    /// Index into the run's [`Nodes`].
    pub(crate) node: usize,
}

impl Name {
    /// `user` in `room`, connecting to node `node`.
    pub(crate) fn new(user: String, room: String, node: usize) -> Self {
        Self { user, room, node }
    }
}

/// One peer to connect: who, where, and its token (Octate).
pub(crate) struct Spec {
    pub(crate) name: Name,
    pub(crate) token: Option<String>,
}

/// Pairs names with their tokens.
pub(crate) fn specs(names: Vec<Name>, tokens: Vec<Option<String>>) -> Vec<Spec> {
    names
        .into_iter()
        .zip(tokens)
        .map(|(name, token)| Spec { name, token })
        .collect()
}

/// Mints tokens for `names` and joins them all, 64 at a time, each on its node; returns
/// the peers in the order of `names` and the seconds it took. `what` names them in errors.
pub(crate) async fn join_named(
    proto: &std::sync::Arc<Proto>,
    nodes: &std::sync::Arc<Nodes>,
    names: Vec<Name>,
    what: &str,
) -> Res<(Vec<Joined>, f64)> {
    let tokens = proto.tokens(&names, nodes).await?;
    let specs = specs(names, tokens);
    let started = std::time::Instant::now();
    let joined = join_many(proto, nodes, specs, 64).await;
    let secs = started.elapsed().as_secs_f64();
    let mut peers = Vec::with_capacity(joined.len());
    for j in joined {
        peers.push(j.map_err(|e| format!("connecting {what}: {e}"))?);
    }
    Ok((peers, secs))
}

/// Joins every spec on its node with at most `concurrency` joins in flight; results in
/// spec order.
pub(crate) async fn join_many(
    proto: &std::sync::Arc<Proto>,
    nodes: &Nodes,
    specs: Vec<Spec>,
    concurrency: usize,
) -> Vec<Result<Joined, String>> {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let n = specs.len();
    for (i, spec) in specs.into_iter().enumerate() {
        let dialer = nodes.node(spec.name.node).dialer.clone();
        let (proto, permits) = (proto.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let name = &spec.name;
            let joined = proto
                .join(&dialer, &name.room, &name.user, spec.token.as_deref())
                .await
                .map_err(|e| e.to_string());
            (i, joined)
        });
    }
    let mut out: Vec<Option<Result<Joined, String>>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((i, joined)) => out[i] = Some(joined),
            Err(err) => eprintln!("octate-bench: join task failed: {err}"),
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err("join task failed".into())))
        .collect()
}

/// Microseconds since a common origin, shared by every task of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(pub(crate) std::time::Instant);

impl Clock {
    /// Now, in microseconds since the origin.
    pub(crate) fn us(&self) -> u64 {
        self.us_at(std::time::Instant::now())
    }

    /// `at`, in microseconds since the origin (0 before it).
    pub(crate) fn us_at(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_from_the_end() {
        let text = r#"{"type":"sdp-answer","data":{"answer":{"sdp":"t=0 0","seq":7,"t":123456}}}"#;
        assert_eq!(last_u64(text, "\"t\":"), Some(123_456));
        assert_eq!(last_u64(text, "\"seq\":"), Some(7));
        assert_eq!(last_u64(text, "\"n\":"), None);
    }

    #[test]
    fn sdp_text_has_the_asked_size_and_is_a_json_string_body() {
        for len in [300, 1000, 1500] {
            let sdp = sdp_text(len, "offer");
            assert!(
                sdp.len() <= len && sdp.len() + 2 >= len,
                "{len}: {}",
                sdp.len()
            );
            let json = format!("\"{sdp}\"");
            assert!(serde_json::from_str::<String>(&json).is_ok(), "{len}");
        }
    }

    #[test]
    fn both_protocols_build_valid_json() {
        let body = r#"{"type":"offer","sdp":"v=0","seq":1,"t":2}"#;
        let proto = Proto::Matchbox;
        let text = proto.signal("9c6f0c2e-0000-4000-8000-000000000000", "sdp-offer", body);
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_ok(),
            "{text}"
        );
        assert_eq!(
            proto.classify(r#"{"Signal":{"sender":"x","data":{}}}"#),
            Incoming::Signal
        );
        assert_eq!(proto.classify(r#"{"NewPeer":"x"}"#), Incoming::Other);
        let minter = Minter::new(
            Some("a test secret of at least thirty-two bytes!"),
            "k1",
            "127.0.0.1:1".parse().expect("addr"),
            None,
        )
        .expect("minter");
        let octate = Proto::Octate(Box::new(minter));
        let text = octate.signal("bob", "sdp-answer", body);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "sdp-answer");
        assert_eq!(v["data"]["peer"], "bob");
        assert_eq!(
            octate.classify(r#"{"type":"cursor-update","userId":"a"}"#),
            Incoming::Update
        );
        assert_eq!(
            octate.classify(r#"{"type":"ice-candidate","userId":"a"}"#),
            Incoming::Signal
        );
        assert_eq!(
            octate.classify(r#"{"type":"heartbeat"}"#),
            Incoming::Heartbeat
        );
    }
}
