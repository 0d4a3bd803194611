//! A session that outlives its connections: when the socket ends unexpectedly it reconnects
//! with back-off, resumes with the newest ticket, and authenticates afresh with a new token
//! when the server no longer knows the session.

use std::future::Future;
use std::time::Duration;

use octate_protocol::{
    ClientMessage, ErrorCode, IceServer, ResumeTicket, ServerMessage, SignalKind,
};

use crate::ClientError;
use crate::backoff::{Backoff, Jitter};
use crate::connection::{self, Client};
use crate::welcome::{Latest, Membership};

/// Where tokens for a fresh `auth` come from (an HTTP call, a cache, ...).
pub trait TokenSource: Send {
    /// A valid token for the session's user and room.
    fn token(&mut self) -> impl Future<Output = Result<String, ClientError>> + Send;
}

impl<F, Fut> TokenSource for F
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<String, ClientError>> + Send,
{
    fn token(&mut self) -> impl Future<Output = Result<String, ClientError>> + Send {
        self()
    }
}

/// How a [`Session`] connects and reconnects.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The signaling URL (e.g. `ws://127.0.0.1:3001/`).
    pub url: String,
    /// Display name sent with `auth`.
    pub user_name: Option<String>,
    /// Reconnect pacing.
    pub backoff: Backoff,
    /// Longest time without any frame before the connection is taken for dead; the server
    /// sends a heartbeat every 30 s by default.
    pub silence: Duration,
    /// Longest time one connect-and-handshake attempt may take.
    pub attempt_timeout: Duration,
}

impl SessionConfig {
    /// The defaults for `url`: 250 ms back-off doubling up to 10 s, 10 attempts, 75 s of
    /// silence, 10 s per attempt.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user_name: None,
            backoff: Backoff::default(),
            silence: Duration::from_secs(75),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// What happened in a [`Session`].
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// The first `auth` succeeded.
    Joined(Membership),
    /// A new connection took over the session: the other peers were told nothing. Restart
    /// ICE on peer connections that are not connected; nothing sent in the gap was replayed.
    Resumed(Membership),
    /// The session was gone, and a fresh `auth` joined the room again: the other peers saw
    /// this peer leave and join.
    Reauthenticated(Membership),
    /// A server message: peer events, signals, updates, errors.
    Message(ServerMessage),
    /// The server ended the session on purpose (close code and reason, when sent); the
    /// session will not reconnect.
    Ended(Option<(u16, String)>),
}

/// A signaling session that reconnects by itself.
pub struct Session<T> {
    config: SessionConfig,
    tokens: T,
    client: Option<Client>,
    /// What the last connection handed out, kept while there is none.
    latest: Latest,
    /// Failed reconnect attempts in a row.
    attempt: u32,
    /// Why the connection or the last reconnect attempt failed.
    last_error: Option<ClientError>,
    jitter: Jitter,
    pending: Option<SessionEvent>,
    ended: bool,
}

impl<T> std::fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.config.url)
            .field("connected", &self.client.is_some())
            .field("attempt", &self.attempt)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<T: TokenSource> Session<T> {
    /// Authenticates with a token from `tokens`; the first event is [`SessionEvent::Joined`].
    pub async fn start(config: SessionConfig, mut tokens: T) -> Result<Self, ClientError> {
        let token = tokens.token().await?;
        let attempt = Client::authenticate(&config.url, &token, config.user_name.as_deref());
        let (client, membership) = tokio::time::timeout(config.attempt_timeout, attempt)
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(Self {
            config,
            tokens,
            client: Some(client),
            latest: Latest::default(),
            attempt: 0,
            last_error: None,
            jitter: Jitter::from_clock(),
            pending: Some(SessionEvent::Joined(membership)),
            ended: false,
        })
    }

    /// The next event; reconnects first when the connection is gone.
    ///
    /// Returns [`ClientError::GaveUp`] when reconnecting failed `max_attempts` times in a
    /// row, and [`ClientError::NotConnected`] once the session has ended. Dropping the call
    /// (in a `select!`) loses no message; a reconnect it was making starts over.
    pub async fn next_event(&mut self) -> Result<SessionEvent, ClientError> {
        loop {
            if let Some(event) = self.pending.take() {
                return Ok(event);
            }
            if self.ended {
                return Err(ClientError::NotConnected);
            }
            let Some(client) = self.client.as_mut() else {
                return self.reconnect().await;
            };
            match client.recv_until_silent(self.config.silence).await {
                Ok(msg) => return Ok(SessionEvent::Message(msg)),
                Err(err @ ClientError::Protocol(_)) => return Err(err),
                Err(err) if should_reconnect(&err) => self.lose_connection(err),
                Err(err) => {
                    self.end();
                    return Ok(SessionEvent::Ended(match err {
                        ClientError::Closed(frame) => frame,
                        _ => None,
                    }));
                }
            }
        }
    }

    /// Sends a message on the current connection; [`ClientError::NotConnected`] between
    /// connections.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let client = self.client.as_mut().ok_or(ClientError::NotConnected)?;
        let result = client.send(msg).await;
        if let Err(ClientError::Io(_) | ClientError::WebSocket(_)) = &result {
            self.lose_connection(ClientError::Closed(None));
        }
        result
    }

    /// Sends an SDP offer / answer or ICE candidate to `peer`.
    pub async fn signal(
        &mut self,
        kind: SignalKind,
        peer: &str,
        payload: serde_json::Value,
    ) -> Result<(), ClientError> {
        self.send(&connection::signal(kind, peer, payload)?).await
    }

    /// The ticket the next reconnect will resume with.
    pub fn ticket(&self) -> Option<&ResumeTicket> {
        match &self.client {
            Some(client) => client.ticket(),
            None => self.latest.ticket(),
        }
    }

    /// The newest STUN/TURN servers the server handed out.
    pub fn ice_servers(&self) -> Option<&[IceServer]> {
        match &self.client {
            Some(client) => client.ice_servers(),
            None => self.latest.ice_servers(),
        }
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// Ends the session: close code 1000, the other peers see this peer leave. Between
    /// connections there is nothing to close: the server drops the session when its grace
    /// runs out.
    pub async fn close(mut self) -> Result<(), ClientError> {
        match self.client.take() {
            Some(client) => client.close().await,
            None => Ok(()),
        }
    }

    /// Forgets the dead connection, keeping what it handed out for the reconnect.
    fn lose_connection(&mut self, err: ClientError) {
        if let Some(client) = self.client.take() {
            self.latest = client.latest().clone();
        }
        self.last_error = Some(err);
    }

    /// Ends the session for good.
    fn end(&mut self) {
        self.client = None;
        self.latest = Latest::default();
        self.ended = true;
    }

    /// Reconnects with back-off until an attempt succeeds or the attempts run out.
    async fn reconnect(&mut self) -> Result<SessionEvent, ClientError> {
        loop {
            if self.attempt >= self.config.backoff.max_attempts {
                let attempts = self.attempt;
                let last = self.last_error.take().unwrap_or(ClientError::NotConnected);
                self.end();
                return Err(ClientError::GaveUp {
                    attempts,
                    last: Box::new(last),
                });
            }
            let wait = self.config.backoff.delay(self.attempt, &mut self.jitter);
            tokio::time::sleep(wait).await;
            self.attempt += 1;
            let attempt = tokio::time::timeout(self.config.attempt_timeout, self.reconnect_once());
            match attempt.await.unwrap_or(Err(ClientError::Timeout)) {
                Ok(event) => {
                    self.attempt = 0;
                    self.last_error = None;
                    return Ok(event);
                }
                Err(err) => self.last_error = Some(err),
            }
        }
    }

    /// One attempt: `resume` with the ticket when there is one, else (or when the server
    /// no longer knows the session) a fresh `auth`.
    async fn reconnect_once(&mut self) -> Result<SessionEvent, ClientError> {
        if let Some(ticket) = self.latest.ticket().cloned() {
            match Client::resume(&self.config.url, &ticket).await {
                Ok((client, membership)) => {
                    self.client = Some(client);
                    return Ok(SessionEvent::Resumed(membership));
                }
                Err(err) if resume_may_work_later(&err) => return Err(err),
                Err(_) => self.latest.forget_ticket(),
            }
        }
        let token = self.tokens.token().await?;
        let user_name = self.config.user_name.as_deref();
        let (client, membership) =
            Client::authenticate(&self.config.url, &token, user_name).await?;
        self.client = Some(client);
        Ok(SessionEvent::Reauthenticated(membership))
    }
}

/// Whether a connection that failed with `err` ended by accident, so that the session
/// should come back: no close frame, a network error, silence, or a close code that means
/// "not your fault, come back" (going away, server error, restart, try again later,
/// heartbeat timeout, slow consumer, memory pressure).
fn should_reconnect(err: &ClientError) -> bool {
    match err {
        ClientError::Io(_) | ClientError::WebSocket(_) | ClientError::Timeout => true,
        ClientError::Closed(None) => true,
        ClientError::Closed(Some((code, _))) => {
            matches!(code, 1001 | 1006 | 1011 | 1012 | 1013 | 4000 | 4008 | 4010)
        }
        _ => false,
    }
}

/// Whether a failed `resume` should be tried again with the same ticket rather than given
/// up for a fresh `auth`: the server was not reached, or asked to slow down.
fn resume_may_work_later(err: &ClientError) -> bool {
    match err {
        ClientError::Io(_)
        | ClientError::WebSocket(_)
        | ClientError::Timeout
        | ClientError::Closed(None) => true,
        ClientError::Refused { code, .. } => {
            matches!(code, ErrorCode::RateLimited | ErrorCode::Unavailable)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u16) -> ClientError {
        ClientError::Closed(Some((code, String::new())))
    }

    #[test]
    fn accidents_reconnect() {
        for err in [
            ClientError::Closed(None),
            ClientError::Timeout,
            ClientError::Io(std::io::ErrorKind::ConnectionReset.into()),
            closed(1001),
            closed(1011),
            closed(1013),
            closed(4000),
            closed(4008),
        ] {
            assert!(should_reconnect(&err), "{err:?}");
        }
    }

    #[test]
    fn deliberate_ends_do_not_reconnect() {
        for code in [1000, 1002, 1008, 1009, 4001, 4002, 4003, 4004, 4005, 4029] {
            assert!(!should_reconnect(&closed(code)), "close {code}");
        }
        assert!(!should_reconnect(&ClientError::NotConnected));
    }

    #[test]
    fn a_refused_resume_falls_back_to_auth_unless_it_is_only_slowed_down() {
        let refused = |code| ClientError::Refused {
            code,
            message: String::new(),
        };
        assert!(!resume_may_work_later(&ClientError::ResumeFailed(
            String::new()
        )));
        assert!(!resume_may_work_later(&refused(
            ErrorCode::NotAuthenticated
        )));
        assert!(!resume_may_work_later(&closed(4001)));
        assert!(resume_may_work_later(&refused(ErrorCode::RateLimited)));
        assert!(resume_may_work_later(&ClientError::Closed(None)));
        assert!(resume_may_work_later(&ClientError::Timeout));
    }
}
