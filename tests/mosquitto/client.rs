//! A real MQTT client (rumqttc) whose event loop runs in a task, and what it saw.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

use crate::WAIT;

#[derive(Debug)]
pub(crate) enum Ev {
    Publish(String),
    SubAck(Vec<SubscribeReasonCode>),
    Closed(String),
}

/// A connected MQTT client whose event loop runs in a task.
pub(crate) struct Mqtt {
    client: AsyncClient,
    pub(crate) events: mpsc::UnboundedReceiver<Ev>,
}

pub(crate) async fn mqtt(
    port: u16,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Mqtt, String> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(username, password);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, eventloop.poll()).await {
            Err(_) => return Err("no CONNACK".into()),
            Ok(Err(e)) => return Err(e.to_string()),
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
                    let _ = tx.send(Ev::Closed(e.to_string()));
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
    pub(crate) async fn next(&mut self) -> Ev {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an MQTT event in time")
            .expect("event loop alive")
    }

    /// Subscribes and returns the SUBACK codes; proves the connection is alive.
    pub(crate) async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
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

    pub(crate) async fn assert_alive(&mut self) {
        let codes = self.subscribe("alive/check").await;
        assert_eq!(codes.len(), 1);
    }

    pub(crate) async fn assert_kicked(&mut self) {
        loop {
            match self.next().await {
                Ev::Closed(_) => return,
                Ev::Publish(_) | Ev::SubAck(_) => {}
            }
        }
    }

    pub(crate) async fn publish(&self, topic: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, b"x".to_vec())
            .await
            .expect("queue publish");
    }
}

pub(crate) fn ok(codes: &[SubscribeReasonCode]) -> bool {
    codes.len() == 1 && matches!(codes[0], SubscribeReasonCode::Success(_))
}
