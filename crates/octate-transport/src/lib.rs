//! Octate transport.
