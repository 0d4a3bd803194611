//! Token issue and verify costs. `cargo bench -p octate-auth --bench tokens`.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use octate_auth::{KeyRing, TokenAuthority};

const NOW: u64 = 1_700_000_000_000;

fn bench_tokens(c: &mut Criterion) {
    let keys = KeyRing::new("k1", b"a benchmark secret of at least thirty-two bytes")
        .unwrap_or_else(|e| panic!("{e}"));
    let authority = TokenAuthority::new(keys);
    let (token, _) = authority
        .issue("alice-0123456789", "room-0123456789", None, NOW)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("tokens");
    group.bench_function("issue", |b| {
        b.iter(|| {
            authority.issue(
                black_box("alice-0123456789"),
                black_box("room-0123456789"),
                None,
                NOW,
            )
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| authority.verify(black_box(&token), NOW + 1))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_tokens
}
criterion_main!(benches);
