//! Routing cost in the core: `handle_message` plus draining its outputs, for a signal in a
//! room of 2 and a cursor update in a room of 32; and a page of the room list among 10,000
//! rooms. `cargo bench -p octate-core --bench routing`.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use octate_core::{ConnId, Core, CoreConfig, Identity};
use octate_protocol::{ClientMessage, DEFAULT_MAX_MESSAGE_BYTES, RoomId, UserId};

const NOW: u64 = 1_700_000_000_000;

/// A core with one room of `n` peers, user `u{i}` on `ConnId(i)`, outputs drained.
fn room_of(n: u64) -> Core {
    let config = CoreConfig {
        max_peers_per_room: 64,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, NOW);
    let room_id = RoomId::new("room-1").unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        let identity = Identity {
            user_id: UserId::new(format!("u{i}")).unwrap_or_else(|e| panic!("{e}")),
            room_id: room_id.clone(),
        };
        core.handle_authenticated(NOW + i, ConnId(i), identity, None);
    }
    while core.poll_output().is_some() {}
    core
}

fn decode(text: &str) -> ClientMessage {
    ClientMessage::decode(text.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench_routing(c: &mut Criterion) {
    let offer = decode(&format!(
        r#"{{"type":"sdp-offer","data":{{"peer":"u1","offer":{{"type":"offer","sdp":"{}"}}}}}}"#,
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50001 typ host\\r\\n".repeat(18)
    ));
    let cursor = decode(r#"{"type":"cursor-update","data":{"line":42,"column":17}}"#);
    let mut group = c.benchmark_group("handle_message");

    let mut core = room_of(2);
    let mut now = NOW + 1_000;
    group.bench_function("signal, room of 2", |b| {
        b.iter_batched(
            || offer.clone(),
            |msg| {
                now += 1;
                core.handle_message(now, ConnId(0), msg);
                let mut outputs = 0;
                while let Some(out) = core.poll_output() {
                    black_box(&out);
                    outputs += 1;
                }
                assert_eq!(outputs, 1);
            },
            BatchSize::SmallInput,
        );
    });

    let mut core = room_of(32);
    group.bench_function("cursor-update, room of 32", |b| {
        b.iter_batched(
            || cursor.clone(),
            |msg| {
                now += 1;
                core.handle_message(now, ConnId(5), msg);
                let mut outputs = 0;
                while let Some(out) = core.poll_output() {
                    black_box(&out);
                    outputs += 1;
                }
                assert_eq!(outputs, 1);
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// A core with `n` rooms `room-{i}` of one peer each, outputs drained.
fn rooms(n: u64) -> Core {
    let config = CoreConfig {
        max_rooms: 2 * n as usize,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, NOW);
    for i in 0..n {
        let identity = Identity {
            user_id: UserId::new(format!("u{i}")).unwrap_or_else(|e| panic!("{e}")),
            room_id: RoomId::new(format!("room-{i:05}")).unwrap_or_else(|e| panic!("{e}")),
        };
        core.handle_authenticated(NOW + i, ConnId(i), identity, None);
    }
    while core.poll_output().is_some() {}
    core
}

/// One page of the server API's room list, as a dashboard polls it.
fn bench_rooms_page(c: &mut Criterion) {
    let core = rooms(10_000);
    let middle = RoomId::new("room-05000").unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("rooms_page");
    group.bench_function("first page of 51, 10,000 rooms", |b| {
        b.iter(|| black_box(core.rooms_page(None, None, 51)));
    });
    group.bench_function("middle page of 51, 10,000 rooms", |b| {
        b.iter(|| black_box(core.rooms_page(None, Some(&middle), 51)));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_routing, bench_rooms_page
}
criterion_main!(benches);
