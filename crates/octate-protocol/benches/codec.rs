//! Decode and encode costs of the messages on the hot paths: SDP/ICE relay, cursor
//! updates, joins. `cargo bench -p octate-protocol --bench codec`.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use octate_protocol::{
    ClientMessage, DEFAULT_MAX_MESSAGE_BYTES, PeerInfo, RoomId, RoomMetadata, RoomState,
    ServerMessage, SignalKind, UserId,
};

/// An SDP offer as a browser sends it: about 1 KB of escaped SDP text.
fn sdp_offer() -> String {
    let mut sdp = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n\
         a=group:BUNDLE 0\\r\\na=extmap-allow-mixed\\r\\na=msid-semantic: WMS\\r\\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\nc=IN IP4 0.0.0.0\\r\\n\
         a=ice-ufrag:Qx7B\\r\\na=ice-pwd:Jr4vd8JYp3WlkPmzsbzL1tq0\\r\\na=ice-options:trickle\\r\\n\
         a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\\r\\n\
         a=setup:actpass\\r\\na=mid:0\\r\\na=sctp-port:5000\\r\\na=max-message-size:262144\\r\\n",
    );
    let mut n = 1;
    while sdp.len() < 950 {
        sdp.push_str(&format!(
            "a=candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host generation 0\\r\\n",
            50_000 + n
        ));
        n += 1;
    }
    format!(
        r#"{{"type":"sdp-offer","data":{{"peer":"bob","offer":{{"type":"offer","sdp":"{sdp}"}}}}}}"#
    )
}

const ICE: &str = r#"{"type":"ice-candidate","data":{"peer":"bob","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 192.0.2.7 49203 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag Qx7B network-cost 999","sdpMid":"0","sdpMLineIndex":0}}}"#;
const CURSOR: &str = r#"{"type":"cursor-update","data":{"line":42,"column":17,"selection":{"from":{"line":42,"column":3},"to":{"line":42,"column":17}}}}"#;

fn id<T>(r: Result<T, octate_protocol::ProtocolError>) -> T {
    r.unwrap_or_else(|e| panic!("fixture: {e}"))
}

fn peer(user: &str, host: bool) -> PeerInfo {
    PeerInfo {
        user_id: id(UserId::new(user)),
        user_name: user.to_uppercase(),
        is_host: host,
        connected_at: 1_700_000_000_000,
        last_heartbeat: 1_700_000_000_500,
    }
}

fn bench_codec(c: &mut Criterion) {
    let offer = sdp_offer();
    let mut decode = c.benchmark_group("decode");
    for (name, text) in [
        ("sdp-offer", offer.as_str()),
        ("ice-candidate", ICE),
        ("cursor-update", CURSOR),
    ] {
        decode.throughput(Throughput::Bytes(text.len() as u64));
        decode.bench_function(name, |b| {
            b.iter(|| ClientMessage::decode(black_box(text.as_bytes()), DEFAULT_MAX_MESSAGE_BYTES))
        });
    }
    decode.finish();

    let data = match id(ClientMessage::decode(
        offer.as_bytes(),
        DEFAULT_MAX_MESSAGE_BYTES,
    )) {
        ClientMessage::Signal { data, .. } => data,
        other => panic!("fixture is a signal: {other:?}"),
    };
    let room_id = id(RoomId::new("room-1"));
    let signal = ServerMessage::Signal {
        kind: SignalKind::Offer,
        from: id(UserId::new("alice")),
        room_id: room_id.clone(),
        data,
    };
    let joined = ServerMessage::PeerJoined {
        room_id: room_id.clone(),
        peer: peer("bob", false),
    };
    let auth_ok = ServerMessage::AuthOk {
        user_id: id(UserId::new("bob")),
        room: RoomMetadata {
            room_id: room_id.clone(),
            room_name: "Pairing on main.rs".into(),
            host_id: id(UserId::new("alice")),
            host_name: "ALICE".into(),
            file_id: Some("src/main.rs".into()),
            content: None,
            version: None,
            created_at: 1_700_000_000_000,
            last_activity: 1_700_000_000_500,
            state: RoomState::Active,
            peers: vec![peer("alice", true), peer("bob", false)],
            peer_count: 2,
        },
        ice_servers: None,
        resume: None,
    };
    let mut encode = c.benchmark_group("encode");
    for (name, msg) in [
        ("relayed-signal", &signal),
        ("peer-joined", &joined),
        ("auth-ok", &auth_ok),
    ] {
        encode.throughput(Throughput::Bytes(msg.encode().len() as u64));
        encode.bench_function(name, |b| b.iter(|| black_box(msg).encode()));
    }
    encode.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_codec
}
criterion_main!(benches);
