//! A quick figure.
