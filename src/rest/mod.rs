//! The Action-style REST shim: accepts Alibaba Cloud MQTT's documented requests
//! (`/?Action=ApplyToken&...`, V1 or V3 signed) so the official SDKs work unmodified.
//! A thin transport over the same core as gRPC.
//!
//! Children: `signature` (V1/V3 signature verification).

pub mod signature;

use std::sync::Arc;

use crate::{config::ServeConfig, core::Core};

/// REST-only settings.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Requests per second per source IP; 0 = unlimited.
    pub rate_per_ip: u32,
}

impl RestConfig {
    /// Takes the REST settings out of the serve configuration.
    pub fn from_serve(config: &ServeConfig) -> Self {
        Self {
            rate_per_ip: config.rate_per_ip,
        }
    }
}

/// Builds the HTTP router.
pub fn router(core: Arc<Core>, config: RestConfig) -> axum::Router {
    let _ = (core, config);
    axum::Router::new()
}
