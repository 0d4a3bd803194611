//! The HTTP side: one minimal HTTP/1.1 exchange per call, and the API calls a client needs
//! (a token, fresh TURN credentials).

use std::net::SocketAddr;

use octate_protocol::http::{TokenRequest, TokenResponse, TurnCredentialsResponse};
use octate_protocol::{RoomId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ClientError;

/// An HTTP response: status, headers and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Raw headers, one `name: value` per entry.
    pub headers: Vec<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Parses the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Http(e.to_string()))
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON when the status is 200, else an error naming the status and body.
    fn ok_json<T: DeserializeOwned>(&self, what: &str) -> Result<T, ClientError> {
        if self.status != 200 {
            return Err(ClientError::Http(format!(
                "{what} failed: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )));
        }
        self.json()
    }
}

/// Sends one HTTP/1.1 request (connection: close) and reads the whole response.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, ClientError> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

/// POSTs a JSON body, with `Authorization: Bearer <bearer>` when given.
pub async fn post_json<T: Serialize>(
    addr: SocketAddr,
    path: &str,
    body: &T,
    bearer: Option<&str>,
) -> Result<HttpResponse, ClientError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Http(e.to_string()))?;
    let auth = bearer.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = auth.as_deref() {
        headers.push(("Authorization", auth));
    }
    http_request(addr, "POST", path, &headers, Some(&bytes)).await
}

/// Asks the server for a token for `user` in `room` (`POST /api/auth/token`).
pub async fn fetch_token(
    addr: SocketAddr,
    user: &str,
    room: &str,
    admin_key: Option<&str>,
) -> Result<String, ClientError> {
    let req = TokenRequest {
        user_id: UserId::new(user)?,
        room_id: RoomId::new(room)?,
        ttl_seconds: None,
    };
    let resp = post_json(addr, "/api/auth/token", &req, admin_key).await?;
    Ok(resp.ok_json::<TokenResponse>("token request")?.token)
}

/// Asks for fresh STUN/TURN servers with a room token (`POST /api/turn/credentials`).
pub async fn turn_credentials(
    addr: SocketAddr,
    token: &str,
) -> Result<TurnCredentialsResponse, ClientError> {
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str())];
    let resp = http_request(addr, "POST", "/api/turn/credentials", &headers, None).await?;
    resp.ok_json("turn credentials request")
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, ClientError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Http("no header end".into()))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| ClientError::Http(e.to_string()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Http(format!("bad status line {status_line:?}")))?;
    let headers: Vec<String> = lines.map(str::to_owned).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|h| {
        h.to_ascii_lowercase().starts_with("transfer-encoding:")
            && h.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Http("bad chunk".into()))?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|e| ClientError::Http(e.to_string()))?;
        let size = usize::from_str_radix(size_text.trim(), 16)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(ClientError::Http("short chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_joined() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let resp = parse_response(raw).expect("parses");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"abcde");
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    }

    #[test]
    fn a_response_without_a_header_end_is_an_error() {
        let err = parse_response(b"HTTP/1.1 200 OK\r\n").expect_err("no header end");
        assert!(matches!(err, ClientError::Http(_)), "{err:?}");
    }

    #[test]
    fn a_failed_status_names_status_and_body() {
        let resp = HttpResponse {
            status: 401,
            headers: Vec::new(),
            body: b"nope".to_vec(),
        };
        let err = resp.ok_json::<serde_json::Value>("turn").expect_err("401");
        assert_eq!(err.to_string(), "http: turn failed: 401 nope");
    }
}
