//! Integration tests: one binary, one PostgreSQL cluster per run, a database per test.
mod auth;
mod auth_security;
mod foundation;
mod functions;
mod local_model;
mod own_database;
mod rest;
mod rest_types;
mod schema_behaviour;
mod schema_catalog;
mod schema_isolation;
mod security_fuzz;
mod security_jwt;
mod security_membership;
mod storage;
mod storage_security;
