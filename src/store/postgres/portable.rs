//! `Portable` for the PostgreSQL store.
