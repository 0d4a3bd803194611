//! Octate core.
