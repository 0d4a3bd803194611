#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use octate_auth::{KeyRing, TokenAuthority};

use super::*;
use crate::app::{Clock, WallClock};
use crate::{RssProbe, TransportConfig};

const NOW: UnixMillis = 1_700_000_000_000;
const MINUTE_MS: u64 = 60_000;

/// A wall clock the test sets.
#[derive(Debug)]
struct FakeWall(AtomicU64);

impl WallClock for FakeWall {
    fn unix_ms(&self) -> UnixMillis {
        self.0.load(Ordering::Relaxed)
    }
}

impl FakeWall {
    fn set(&self, at: UnixMillis) {
        self.0.store(at, Ordering::Relaxed);
    }
}

fn app_at(wall: &Arc<FakeWall>) -> Arc<App> {
    let authority = TokenAuthority::new(KeyRing::new("k1", &[7u8; 32]).unwrap());
    App::with_clock(
        TransportConfig::default(),
        authority,
        Box::new(RssProbe),
        Clock::with_wall(wall.clone()),
    )
}

fn code(result: Result<(Identity, Claims), Refusal>) -> Option<ErrorCode> {
    result.err().map(|(code, _)| code)
}

#[test]
fn shifting_the_wall_clock_changes_token_verdicts_but_not_timers() {
    let wall = Arc::new(FakeWall(AtomicU64::new(NOW)));
    let app = app_at(&wall);
    let token = app
        .auth
        .read()
        .issue("alice", "room-1", Some(Duration::from_secs(60)), NOW)
        .unwrap()
        .0;
    assert_eq!(code(verify(&app, &token)), None);
    let timer_at = app.clock.instant_at(NOW + MINUTE_MS);
    let core_now = app.clock.now_ms();

    // The clock is stepped forward past the token's expiry: the token is refused at once.
    wall.set(NOW + 2 * MINUTE_MS);
    assert_eq!(code(verify(&app, &token)), Some(ErrorCode::TokenExpired));
    // Stepped back an hour (a server started before NTP): the token is not valid yet.
    wall.set(NOW - 60 * MINUTE_MS);
    assert_eq!(
        code(verify(&app, &token)),
        Some(ErrorCode::TokenNotYetValid)
    );
    wall.set(NOW + 1);
    assert_eq!(code(verify(&app, &token)), None);

    // Timers and the core keep the monotonic clock: no step moved them.
    assert_eq!(app.clock.instant_at(NOW + MINUTE_MS), timer_at);
    let core_later = app.clock.now_ms();
    assert!(core_later >= core_now && core_later - core_now < MINUTE_MS);
}

#[test]
fn the_index_finds_sessions_by_token_and_by_expiry() {
    let tokens = SessionTokens::default();
    tokens.hold(ConnId(1), "a", NOW + 10, true);
    tokens.hold(ConnId(2), "a", NOW + 10, true);
    tokens.hold(ConnId(3), "b", NOW + 5, true);
    tokens.hold(ConnId(4), "ab", NOW + 1, false);
    assert_eq!(tokens.len(), 4);
    assert_eq!(tokens.next_deadline(), Some(NOW + 5));

    // A token's sessions, and only its own (not those of a token id it prefixes).
    assert_eq!(tokens.take_token("a"), [ConnId(1), ConnId(2)]);
    assert_eq!(tokens.take_token("a"), []);
    assert_eq!(tokens.len(), 2);

    // Expiry takes the sessions with a deadline that has passed, nothing else.
    assert_eq!(tokens.take_expired(NOW + 4), []);
    assert_eq!(tokens.take_expired(NOW + 5), [ConnId(3)]);
    assert_eq!(tokens.take_expired(u64::MAX), []);
    assert_eq!(tokens.next_deadline(), None);
    assert_eq!(tokens.take_token("ab"), [ConnId(4)]);
    assert_eq!(tokens.len(), 0);
}

#[test]
fn a_refreshed_session_runs_on_its_new_token_only() {
    let tokens = SessionTokens::default();
    tokens.hold(ConnId(1), "old", NOW + 10, true);
    tokens.hold(ConnId(1), "new", NOW + 1000, true);
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens.take_expired(NOW + 10), []);
    assert_eq!(tokens.take_token("old"), []);
    assert_eq!(tokens.next_deadline(), Some(NOW + 1000));
    assert_eq!(tokens.take_token("new"), [ConnId(1)]);
}

#[test]
fn dropping_the_lease_forgets_the_session() {
    let tokens = Arc::new(SessionTokens::default());
    tokens.hold(ConnId(7), "a", NOW + 10, true);
    let lease = TokenLease {
        tokens: tokens.clone(),
        conn: ConnId(7),
    };
    assert_eq!(tokens.len(), 1);
    drop(lease);
    assert_eq!(tokens.len(), 0);
    assert_eq!(tokens.next_deadline(), None);
}

#[test]
fn auth_envelope_ids_must_match_the_token() {
    let identity = Identity {
        user_id: UserId::new("mallory").unwrap(),
        room_id: RoomId::new("doc-B").unwrap(),
    };
    let room_a = RoomId::new("doc-A").unwrap();
    let alice = UserId::new("alice").unwrap();
    let refused = check_expected(&identity, Some(&room_a), None).unwrap_err();
    assert_eq!(
        refused,
        (
            ErrorCode::Forbidden,
            "token is for room doc-B, not doc-A".to_owned()
        )
    );
    let refused = check_expected(&identity, None, Some(&alice)).unwrap_err();
    assert_eq!(refused.1, "token is for user mallory, not alice");
    assert!(check_expected(&identity, None, None).is_ok());
    assert!(check_expected(&identity, Some(&identity.room_id), Some(&identity.user_id)).is_ok());
}
