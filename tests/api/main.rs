//! Integration tests against a real server on port 0, over real gRPC, grpc-web and REST clients,
//! on SQLite always and on PostgreSQL when `RUNWARDEN_TEST_POSTGRES_URL` is set.

mod alerts;
mod anomalies;
mod batch;
mod dashboard;
mod disk;
mod exec;
mod faces;
mod guardian;
mod helpers;
mod hostile;
mod lifecycle;
mod outage;
mod overload;
mod pipeline;
mod query;
mod replicas;
mod retention;
mod scoring;
mod security;
mod stats;
mod submit;
mod workers;
