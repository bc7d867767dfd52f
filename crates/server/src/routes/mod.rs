pub mod gateway;
pub mod graphql;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod panic;
pub mod rest;
