//! The names the tests in this folder have always imported from `common`, now re-exported
//! from the test kit (`crates/octate-test`). New tests can use `octate_test` directly.

#![allow(dead_code, unused_imports)]

pub mod peers;

// `tests/common/attack.rs` stays a file of its own: tests load it with `#[path]`.
pub use octate_test::attack;
pub use octate_test::server::{TestServer, fast_config};
pub use octate_test::tokens::SECRET;
