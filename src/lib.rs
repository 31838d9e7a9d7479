//! mqtt-tokend: a self-hosted credential control plane for MQTT fleets, compatible with
//! Alibaba Cloud MQTT's token and device-credential APIs.
//!
//! Data flows one way: transport ([`grpc`], [`rest`]) -> [`core`] -> [`store`]. [`app`] wires
//! them together; [`config`] is the command line; [`observe`] serves the operations endpoint
//! (`/metrics`, `/healthz`, `/readyz`) from what the core keeps, [`tls`] the certificate
//! handling of both listeners. [`kicker`] is a client of the service (the `kicker`
//! subcommand) that disconnects revoked clients of HTTP-auth brokers.

pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod grpc;
pub mod kicker;
pub mod observe;
pub mod rest;
pub mod store;
pub mod tls;

/// The generated protobuf and gRPC code of `proto/mqtt/token/v1`, from the client crate (one
/// codegen for the server and every client).
pub use mqtt_tokend_client::proto;
