//! mqtt-tokend: a self-hosted credential control plane for MQTT fleets, compatible with
//! Alibaba Cloud MQTT's token and device-credential APIs.
//!
//! Data flows one way: transport ([`grpc`], [`rest`]) -> [`core`] -> [`store`]. [`app`] wires
//! them together; [`config`] is the command line; [`observe`] holds metrics and the audit log,
//! [`tls`] the certificate handling of both listeners.

pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod grpc;
pub mod observe;
pub mod rest;
pub mod store;
pub mod tls;

/// The generated protobuf and gRPC code of `proto/mqtt/token/v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mqtt.token.v1");

    /// The file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("mqtt_token_v1_descriptor");
}
