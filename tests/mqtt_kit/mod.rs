//! A real MQTT client (rumqttc) for the broker end-to-end tests (Mosquitto, rmqtt): its event
//! loop runs in a task and hands what it saw to the test.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

/// How long a client waits for the broker.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub enum Ev {
    /// A message on this topic.
    Publish(String),
    /// A SUBACK.
    SubAck(Vec<SubscribeReasonCode>),
    /// The connection ended, and why.
    Closed(String),
}

/// A connected MQTT client whose event loop runs in a task.
pub struct Mqtt {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Ev>,
}

/// Connects to the broker on 127.0.0.1:`port`; `Err` with the reason if the broker refuses.
pub async fn connect(
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive: Duration,
) -> Result<Mqtt, String> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(username, password);
    opts.set_keep_alive(keep_alive);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, eventloop.poll()).await {
            Err(_) => return Err("no CONNACK".into()),
            Ok(Err(e)) => return Err(format!("{e:?}")),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
        }
    }
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish(p.topic),
                Ok(Event::Incoming(Packet::SubAck(s))) => Ev::SubAck(s.return_codes),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Ev::Closed(format!("{e:?}")));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Ok(Mqtt { client, events })
}

impl Mqtt {
    /// The next event.
    pub async fn next(&mut self) -> Ev {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an MQTT event in time")
            .expect("event loop alive")
    }

    /// Subscribes and returns the SUBACK codes; proves the connection is alive.
    pub async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        loop {
            match self.next().await {
                Ev::SubAck(codes) => return codes,
                Ev::Closed(e) => panic!("connection closed while subscribing: {e}"),
                Ev::Publish(_) => {}
            }
        }
    }

    /// The connection is up: a SUBACK comes back for a granted filter.
    pub async fn assert_granted(&mut self, granted: &str) {
        assert!(ok(&self.subscribe(granted).await), "{granted} refused");
    }

    /// The connection is up: a SUBACK (granted or not) comes back.
    pub async fn assert_alive(&mut self) {
        let codes = self.subscribe("alive/check").await;
        assert_eq!(codes.len(), 1);
    }

    /// The broker closed the connection.
    pub async fn assert_kicked(&mut self) {
        self.closed().await;
    }

    /// Waits until the broker closes the connection; returns when (ms since the epoch).
    pub async fn closed(&mut self) -> i64 {
        loop {
            match self.next().await {
                Ev::Closed(_) => return mqtt_tokend_client::now_ms(),
                Ev::Publish(_) | Ev::SubAck(_) => {}
            }
        }
    }

    /// Publishes one QoS 1 message.
    pub async fn publish(&self, topic: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, b"x".to_vec())
            .await
            .expect("queue publish");
    }

    /// The next message's topic (SUBACKs are skipped; a close fails).
    pub async fn next_publish(&mut self) -> String {
        loop {
            match self.next().await {
                Ev::Publish(topic) => return topic,
                Ev::SubAck(_) => {}
                Ev::Closed(e) => panic!("closed while waiting for a message: {e}"),
            }
        }
    }
}

/// A SUBACK that grants the one filter asked for.
pub fn ok(codes: &[SubscribeReasonCode]) -> bool {
    codes.len() == 1 && matches!(codes[0], SubscribeReasonCode::Success(_))
}
