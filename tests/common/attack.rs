//! Tools of the adversarial tests: see `octate_test::attack` and `octate_test::ws`.

#![allow(unused_imports)]

pub use octate_test::attack::*;
