//! runwarden: the control plane scheduled background workers report to after every run.
//!
//! Layers (see `DESIGN.md`): [`domain`] is pure logic; [`store`] owns the database; [`api`]
//! implements the gRPC services; [`rest`] is the JSON shim over the same methods; [`server`]
//! assembles everything on one port.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod client;
pub mod codec;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod detector;
pub mod domain;
pub mod error;
pub mod exec;
pub mod front;
pub mod guardian;
pub mod openapi;
pub mod proto;
pub mod received;
pub mod rest;
pub mod retention;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod transport;

pub use config::Config;
pub use server::App;
