//! Assertions on what a signaling client receives: see `octate_test::peers`.

#![allow(unused_imports)]

pub use octate_test::peers::*;
