//! The dead-letter path: a message (or one call of it) that cannot be applied is logged with
//! its partition, offset and reason, and produced to the dead-letter topic (default
//! `TOPIC.dead`) with the reason and its origin in headers. The partition goes on.
//!
//! Delivery to the dead-letter topic is at least once: after a crash the calls after the
//! store's position are processed again, and a bad one is sent again.

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::worker::Msg;

/// Logs what the dead-letter topic refused.
pub struct DeadContext;

impl ClientContext for DeadContext {}

impl ProducerContext for DeadContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            super::log(&format!("dead-letter topic: delivery failed: {e}"));
        }
    }
}

/// Where bad messages go.
pub struct DeadLetters {
    /// `None`: only logged (`--dead-letter-topic ''`).
    producer: Option<ThreadedProducer<DeadContext>>,
    topic: String,
    source: String,
}

impl DeadLetters {
    /// A producer to `topic` (empty: log only) for messages of `source`.
    pub fn new(config: &ClientConfig, topic: String, source: String) -> Result<Self, String> {
        let producer = if topic.is_empty() {
            None
        } else {
            let mut config = config.clone();
            config.set("acks", "all");
            Some(
                config
                    .create_with_context(DeadContext)
                    .map_err(|e| format!("dead-letter producer: {e}"))?,
            )
        };
        Ok(DeadLetters {
            producer,
            topic,
            source,
        })
    }

    /// Log (when `log`) and produce one bad message.
    pub fn send(&self, partition: i32, msg: &Msg, call: Option<usize>, reason: &str, log: bool) {
        let which = call.map(|c| format!(" call {c}")).unwrap_or_default();
        if log {
            super::log(&format!(
                "bad message: {} partition {partition} offset {}{which}: {reason}",
                self.source, msg.offset
            ));
        }
        let Some(producer) = &self.producer else {
            return;
        };
        let origin = format!("{}/{partition}/{}{which}", self.source, msg.offset);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "profiledb-error",
                value: Some(reason),
            })
            .insert(Header {
                key: "profiledb-origin",
                value: Some(&origin),
            });
        let payload: &[u8] = msg.payload.as_deref().unwrap_or_default();
        let mut record = BaseRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = &msg.key {
            record = record.key(key.as_slice());
        }
        if let Err((e, _)) = producer.send(record) {
            super::log(&format!("dead-letter topic: cannot queue: {e}"));
        }
    }

    /// Wait (bounded) for queued dead letters to be delivered.
    pub fn flush(&self) {
        if let Some(p) = &self.producer {
            use rdkafka::producer::Producer;
            if let Err(e) = p.flush(std::time::Duration::from_secs(10)) {
                super::log(&format!("dead-letter topic: flush: {e}"));
            }
        }
    }
}
