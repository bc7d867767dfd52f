pub mod gateway;
pub mod health;
pub mod rest;
