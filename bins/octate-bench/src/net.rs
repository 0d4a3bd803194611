//! Dialing: loopback only, client sockets spread over several source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use tokio::io::BufReader;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Res;

/// A client WebSocket over plain TCP, reading through a [`BufReader`] (see [`READ_BUFFER`]).
pub(crate) type Ws = WebSocketStream<BufReader<TcpStream>>;

/// Bytes one `recv` may bring in: the socket is read through a buffer this large,
/// allocated once per connection.
const SOCKET_READ_BUFFER: usize = 16 * 1024;

/// tungstenite's own read buffer. tungstenite zero-fills all of its spare capacity before
/// every read, so a large buffer costs a large `memset` per message (with 16 KiB it was
/// the largest single user-space cost of `relay`, ~4 % of the generator's CPU). Reads
/// from it are copies out of the socket buffer above, not system calls, so it can be
/// small: about one SDP-sized message.
const READ_BUFFER: usize = 2 * 1024;

/// Refuses any address outside 127.0.0.0/8 and ::1: load goes to this machine only.
pub(crate) fn require_loopback(ip: IpAddr) -> Res<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(
            format!("{ip} is not a loopback address: octate-bench only dials 127.0.0.0/8 and ::1")
                .into(),
        )
    }
}

/// Opens WebSockets to one server from several loopback source addresses.
pub(crate) struct Dialer {
    server: SocketAddr,
    /// `host:port` as written in the URL, for the `Host` header.
    authority: String,
    /// Path prefix of the URL, without its trailing `/`.
    base_path: String,
    sources: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

impl Dialer {
    /// `url` is `ws://127.0.0.1:PORT/optional/prefix`; sources are 127.0.0.2 … 127.0.0.(1+n).
    pub(crate) fn new(url: &str, source_addrs: u8) -> Res<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or("the WebSocket URL must start with ws://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let server: SocketAddr = authority.parse().map_err(|_| {
            format!("{authority}: give an IP address and port, e.g. 127.0.0.1:3001")
        })?;
        require_loopback(server.ip())?;
        let sources = if server.is_ipv4() {
            (0..source_addrs)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            server,
            authority: authority.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
            sources,
            next: AtomicUsize::new(0),
        })
    }

    /// The request path for `path` under the URL's own path: `/` alone asks for the URL's
    /// path as written (`ws://…/ws` dials `/ws`, the HTTP port's upgrade path).
    fn path(&self, path: &str) -> String {
        if path == "/" && !self.base_path.is_empty() {
            self.base_path.clone()
        } else {
            format!("{}{path}", self.base_path)
        }
    }

    /// Connects a TCP socket from the next source address, then does the WebSocket
    /// handshake for `path` (appended to the URL's path; `/` for Octate, `/room` for matchbox).
    pub(crate) async fn dial(&self, path: &str) -> Res<Ws> {
        let socket = TcpSocket::new_v4()?;
        if !self.sources.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            // Choose the port at connect time, per 4-tuple, instead of reserving one at
            // bind time: many more connections per source address, TIME_WAIT reuse.
            setsockopt(&socket, IpBindAddressNoPort, &true)?;
            socket.bind(SocketAddr::new(IpAddr::V4(self.sources[i]), 0))?;
        }
        let stream = socket.connect(self.server).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{}{}", self.authority, self.path(path));
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let stream = BufReader::with_capacity(SOCKET_READ_BUFFER, stream);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_the_urls_own_path() {
        let root = Dialer::new("ws://127.0.0.1:3001/", 1).expect("dialer");
        assert_eq!(root.path("/"), "/");
        assert_eq!(root.path("/room"), "/room");
        // The HTTP port accepts the upgrade at exactly /ws.
        let http = Dialer::new("ws://127.0.0.1:3000/ws", 1).expect("dialer");
        assert_eq!(http.path("/"), "/ws");
        let prefixed = Dialer::new("ws://127.0.0.1:3536/rooms/", 1).expect("dialer");
        assert_eq!(prefixed.path("/r1"), "/rooms/r1");
    }
}
