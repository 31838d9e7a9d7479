//! What every program that talks to mqtt-tokend needs, and nothing of the server: the
//! generated API ([`proto`]: messages, gRPC clients and the server stubs the service
//! implements), [`connect`] with the access key on every call, TLS ([`ClientTls`]) and
//! failover across replicas ([`failover`]), the [`RevocationFollower`] a broker runs, and the
//! domain types a broker decides with ([`Grant`], the [`topic`] matcher, the token
//! [`fingerprint`]). The service uses these very types, so a broker and the service
//! agree by construction.
//!
//! Children: `client` (connecting), `body` (a unary request's end of stream in its last
//! frame), `credentials` (the access key), `failover` (several endpoints), `tls` (CA, client
//! certificate, server name), `follower` (the revocation stream), `grant` (grants and topic
//! decisions), `topic` (MQTT topic validation and matching), `revocation` (the typed event),
//! `convert` (proto <-> domain).

#![warn(missing_docs)]

mod body;
pub mod client;
pub mod convert;
mod credentials;
pub mod failover;
pub mod follower;
pub mod grant;
pub mod revocation;
pub mod tls;
pub mod topic;

use std::time::{SystemTime, UNIX_EPOCH};

pub use client::{
    connect, endpoint_url, AccessKey, AuthChannel, BearerAuth, Client, ClientConfig, ConnectError,
    KeyFileError,
};
pub use convert::grant_from_proto;
pub use failover::FailoverChannel;
pub use follower::{
    FollowItem, FollowerOptions, RevisionFile, RevisionStore, RevocationFollower, SnapshotReason,
    WatchError,
};
pub use grant::{AuthMode, DenyReason, Grant, GrantToken, TopicAction};
pub use revocation::{fingerprint, RevocationEvent, RevocationKind};
pub use tls::{ClientTls, Pem, TlsError};

/// The generated protobuf types, gRPC clients and server stubs of `proto/mqtt/token/v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mqtt.token.v1");

    /// The file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("mqtt_token_v1_descriptor");
}

/// The generated types of mosquitto-go-auth's `grpc.AuthService` (`compat/go-auth/auth.proto`),
/// which the server implements so go-auth's gRPC backend can use it unchanged.
pub mod go_auth {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("grpc");
}

/// Milliseconds since the Unix epoch, now: the unit of every time in the API.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
