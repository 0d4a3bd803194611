//! Octate auth.
