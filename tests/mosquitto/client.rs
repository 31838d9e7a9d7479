//! The MQTT client of the Mosquitto tests: the shared one (`mqtt_kit`), with a 30 s keepalive.

use std::time::Duration;

pub(crate) use crate::mqtt_kit::{ok, Ev, Mqtt};

pub(crate) async fn mqtt(
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Mqtt, String> {
    crate::mqtt_kit::connect(port, client_id, username, password, Duration::from_secs(30)).await
}
