#![allow(clippy::unwrap_used)]

use super::*;

const SECRET: &[u8] = b"octate-turn-test-secret-0123";

/// 2023-11-14T22:13:20Z; with the default lifetime of 14400 s, credentials expire at 1700014400.
const NOW_MS: u64 = 1_700_000_000_123;

const TTL: Duration = Duration::from_secs(14_400);

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn secret() -> TurnSecret {
    TurnSecret::new(SECRET).unwrap()
}

// The expected values below were computed apart from this code, with Python's standard library:
//
// python3 -c 'import hmac,hashlib,base64
// s=b"octate-turn-test-secret-0123"
// k=hmac.new(s,b"octate turn user id",hashlib.sha256).digest()
// for u in [b"alice",b"bob"]:
//   i=base64.urlsafe_b64encode(hmac.new(k,u,hashlib.sha256).digest()[:12]).decode().rstrip("=")
//   n="1700014400:"+i
//   print(n, base64.b64encode(hmac.new(s,n.encode(),hashlib.sha1).digest()).decode())
// print(base64.b64encode(hmac.new(s,b"1433895918:turn-user",hashlib.sha1).digest()).decode())'

#[test]
fn credential_is_base64_of_hmac_sha1_of_the_username() {
    assert_eq!(
        secret().credential("1433895918:turn-user"),
        "kOd7UYiuKilzfkJItvsO6eOZL/w="
    );
}

#[test]
fn username_is_expiry_and_a_keyed_hash_of_the_user() {
    let secret = secret();
    assert_eq!(secret.opaque_id(&user("alice")), "rEfd7898wZweFfik");
    assert_eq!(
        secret.username(&user("bob"), 1_700_014_400),
        "1700014400:UX0BMDz0D0dWLc16"
    );
    let other = TurnSecret::new(b"another-secret-0123456789").unwrap();
    assert_ne!(
        other.opaque_id(&user("alice")),
        secret.opaque_id(&user("alice")),
        "the id depends on the secret, so it cannot be computed without it"
    );
}

#[test]
fn ice_servers_carry_a_fresh_credential_then_stun() {
    let config = IceConfig::new(
        [
            "turn:turn.example.com:3478",
            "stun:stun.example.com",
            "turns:turn.example.com:5349?transport=tcp",
        ],
        Some(secret()),
        TTL,
    )
    .unwrap();
    assert!(config.issues_credentials());
    let servers = config.ice_servers(&user("alice"), NOW_MS);
    assert_eq!(
        servers,
        vec![
            IceServer {
                urls: vec![
                    "turn:turn.example.com:3478".into(),
                    "turns:turn.example.com:5349?transport=tcp".into()
                ],
                username: Some("1700014400:rEfd7898wZweFfik".into()),
                credential: Some("SuLGnsSFvBVzrf10gcw2IqWLEHI=".into()),
            },
            IceServer {
                urls: vec!["stun:stun.example.com".into()],
                username: None,
                credential: None,
            },
        ]
    );
    let username = servers[0].username.as_deref().unwrap();
    assert!(
        !username.contains("alice"),
        "the user id stays off the wire"
    );
}

#[test]
fn stun_only_hands_out_no_credentials() {
    let config = IceConfig::new(["stun:stun.example.com:3478"], None, TTL).unwrap();
    assert!(!config.issues_credentials());
    assert_eq!(
        config.ice_servers(&user("alice"), NOW_MS),
        vec![IceServer {
            urls: vec!["stun:stun.example.com:3478".into()],
            username: None,
            credential: None,
        }]
    );
}

#[test]
fn turn_and_secret_need_each_other() {
    assert_eq!(
        IceConfig::new(["stun:s.test", "turn:t.test"], None, TTL).unwrap_err(),
        IceConfigError::TurnWithoutSecret {
            uri: "turn:t.test".into()
        }
    );
    assert_eq!(
        IceConfig::new(["stun:s.test"], Some(secret()), TTL).unwrap_err(),
        IceConfigError::SecretWithoutTurn
    );
}

#[test]
fn secret_and_lifetime_are_bounded() {
    assert_eq!(
        TurnSecret::new(b"fifteen-bytes!!").unwrap_err(),
        IceConfigError::SecretTooShort { len: 15 }
    );
    assert!(TurnSecret::new(b"sixteen-bytes!!!").is_ok());
    for secs in [0, MAX_TURN_TTL.as_secs() + 1] {
        assert_eq!(
            IceConfig::new(["turn:t.test"], Some(secret()), Duration::from_secs(secs)).unwrap_err(),
            IceConfigError::BadTtl { secs }
        );
    }
    assert!(IceConfig::new(["turn:t.test"], Some(secret()), MAX_TURN_TTL).is_ok());
}

#[test]
fn well_formed_uris_are_accepted() {
    for (uri, kind) in [
        ("stun:stun.l.google.com:19302", IceUriKind::Stun),
        ("stun:127.0.0.1", IceUriKind::Stun),
        ("stun:[::1]:3478", IceUriKind::Stun),
        ("turn:turn.example.com", IceUriKind::Turn),
        ("turn:127.0.0.1:3478?transport=udp", IceUriKind::Turn),
        ("turns:turn.example.com:443?transport=tcp", IceUriKind::Turn),
        ("turn:[2001:db8::1]:3478?transport=tcp", IceUriKind::Turn),
        ("turn:a-b.example", IceUriKind::Turn),
    ] {
        assert_eq!(parse_ice_uri(uri), Ok(kind), "{uri}");
    }
}

#[test]
fn malformed_uris_are_refused_with_a_reason() {
    for (uri, reason) in [
        ("http://turn.example.com", "scheme"),
        ("TURN:turn.example.com", "scheme"),
        ("stuns:stun.example.com", "scheme"),
        ("turn://turn.example.com", "//"),
        ("turn:user:pass@turn.example.com", "credentials"),
        ("turn:", "host is missing"),
        ("turn::3478", "host is missing"),
        ("turn:turn.example.com:", "port"),
        ("turn:turn.example.com:0", "port"),
        ("turn:turn.example.com:65536", "port"),
        ("turn:turn.example.com:+80", "port"),
        ("turn:turn.example.com:34x", "port"),
        ("turn:turn.example.com:3478:1", "port"),
        ("turn:turn example.com", "letters, digits"),
        ("turn:turn.example.com/path", "letters, digits"),
        ("turn:-turn.example.com", "start or end"),
        ("turn:turn..example.com", "1 to 63"),
        ("turn:[::1", "closing ]"),
        ("turn:[not-v6]:3478", "not IPv6"),
        ("turn:[::1]3478", "only :port"),
        ("turn:t.test?transport=sctp", "query"),
        ("turn:t.test?", "query"),
        ("stun:s.test?transport=udp", "stun: URI takes no query"),
    ] {
        let err = parse_ice_uri(uri).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(reason), "{uri}: {text}");
        assert!(text.contains(uri), "the message names the URI: {text}");
    }
    let long = format!("turn:{}.test", "a".repeat(600));
    assert!(
        parse_ice_uri(&long)
            .unwrap_err()
            .to_string()
            .contains("512")
    );
}

#[test]
fn debug_hides_the_secret() {
    let config = IceConfig::new(["turn:t.test"], Some(secret()), TTL).unwrap();
    let text = format!("{config:?}");
    assert!(!text.contains("octate-turn-test-secret"), "{text}");
    assert!(text.contains("TurnSecret(..)"), "{text}");
}
