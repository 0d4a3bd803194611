//! Verifies an Octate webhook request's signature (docs/webhooks.md), as a receiver
//! written in Rust would, with `ring`.
//!
//! ```sh
//! OCTATE_WEBHOOK_SECRET=… cargo run --example verify_webhook -- '<Octate-Signature>' body.json
//! ```
//! Exits 0 when the signature is good, 1 when it is not.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

/// How far a signature's timestamp may be from now, in seconds.
const TOLERANCE_SECS: u64 = 300;

/// Whether `header` (`t=<secs>,v1=<hex>`) signs the raw `body` with `secret` at about `now_secs`.
fn verify_octate_signature(secret: &[u8], header: &str, body: &[u8], now_secs: u64) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let Ok(secs) = t.parse::<u64>() else {
        return false;
    };
    if now_secs.abs_diff(secs) > TOLERANCE_SECS {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signed = [t.as_bytes(), b".", body].concat();
    signatures.iter().any(|hex| {
        // `hmac::verify` compares in constant time.
        decode_hex(hex).is_some_and(|tag| hmac::verify(&key, &signed, &tag).is_ok())
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(header), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: verify_webhook '<Octate-Signature>' <body file>");
        std::process::exit(2);
    };
    let Ok(secret) = std::env::var("OCTATE_WEBHOOK_SECRET") else {
        eprintln!("set OCTATE_WEBHOOK_SECRET");
        std::process::exit(2);
    };
    let body = match std::fs::read(&path) {
        Ok(body) => body,
        Err(err) => {
            eprintln!("{path}: {err}");
            std::process::exit(2);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if verify_octate_signature(secret.as_bytes(), &header, &body, now) {
        println!("good signature");
    } else {
        println!("bad signature");
        std::process::exit(1);
    }
}
