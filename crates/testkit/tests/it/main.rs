//! Integration tests: one binary, one PostgreSQL cluster per run, a database per test.
mod foundation;
