//! The `Octate-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

use ring::hmac;

/// Name of the header that carries the signature.
pub const SIGNATURE_HEADER: &str = "octate-signature";

/// How old a signature receivers should accept, in seconds (documented for them).
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// The secret webhook requests are signed with.
#[derive(Clone)]
pub(crate) struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A key from the shared secret's bytes.
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The header value signing `body` at `unix_secs`.
    pub(crate) fn header(&self, unix_secs: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(unix_secs.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = format!("t={unix_secs},v1=");
        for b in tag.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Why a signature was refused (what a receiver checks; used by the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<secs>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further from now than the tolerance.
    #[error("signature timestamp outside the tolerance")]
    Stale,
    /// No `v1` signature matches the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a signature header against `body`, as a receiver should: the timestamp within
/// `tolerance_secs` of `now_secs`, and one `v1` value equal to the HMAC (constant time).
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(decode_hex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_secs.abs_diff(t) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signed = [t.to_string().as_bytes(), b".", body].concat();
    signatures
        .iter()
        .any(|s| hmac::verify(&key, &signed, s).is_ok())
        .then_some(())
        .ok_or(SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_a_known_hmac() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently (Python's hmac).
        let header = SigningKey::new(b"secret").header(1_700_000_000, b"{}");
        assert_eq!(
            header,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn a_good_signature_verifies_and_others_do_not() {
        let key = SigningKey::new(b"s3cret");
        let header = key.header(1_000, b"{\"a\":1}");
        assert_eq!(
            verify_signature(b"s3cret", &header, b"{\"a\":1}", 1_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"other", &header, b"{\"a\":1}", 1_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", &header, b"{\"a\":2}", 1_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", &header, b"{\"a\":1}", 1_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(b"s3cret", "v1=zz", b"", 0, 300),
            Err(SignatureError::Malformed)
        );
    }
}
