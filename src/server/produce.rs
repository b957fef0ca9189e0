//! `serve --produce-to BROKERS/TOPIC` (feature `kafka`, docs/scaling.md): accepted calls are
//! produced to a topic, keyed by project, instead of written to the project's store; the
//! request is answered once the broker has acknowledged every one of them (`acks=all`), so a
//! fleet of stateless collectors feeds `profiledb consume`.
//!
//! The ingest loop (`ingest::apply_messages`) validates each message as always and hands the
//! valid ones here ([`offer`]); the request then waits for the acknowledgements ([`Acks`]).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::{Project, ServerError};

/// How long a request waits for the broker's acknowledgements (librdkafka retries meanwhile).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands each delivery report to the request waiting for it.
pub(crate) struct SinkContext;

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Sender<Result<(), String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Self::DeliveryOpaque) {
        let _ = waiter.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

/// The topic accepted calls go to.
pub(crate) struct Sink {
    producer: ThreadedProducer<SinkContext>,
    topic: String,
}

impl Sink {
    /// A producer for `BROKERS/TOPIC` (brokers `HOST:PORT[,HOST:PORT...]`).
    pub(crate) fn new(spec: &str) -> Result<Sink, ServerError> {
        let bad = || {
            ServerError::Config(format!(
                "--produce-to {spec:?}: give BROKERS/TOPIC, e.g. 10.0.0.5:9092/calls"
            ))
        };
        let (brokers, topic) = spec.rsplit_once('/').ok_or_else(bad)?;
        if brokers.is_empty() || topic.is_empty() {
            return Err(bad());
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", ACK_TIMEOUT.as_millis().to_string())
            .create_with_context(SinkContext)
            .map_err(|e| ServerError::Config(format!("--produce-to {spec:?}: {e}")))?;
        Ok(Sink {
            producer,
            topic: topic.to_string(),
        })
    }
}

/// The acknowledgements one request waits for.
pub(crate) struct Acks {
    tx: Sender<Result<(), String>>,
    rx: Receiver<Result<(), String>>,
    pending: usize,
}

impl Acks {
    fn new() -> Acks {
        let (tx, rx) = channel();
        Acks { tx, rx, pending: 0 }
    }

    /// Wait for every produced call to be acknowledged; the first failure otherwise.
    pub(crate) fn wait(self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + ACK_TIMEOUT + Duration::from_secs(5);
        for _ in 0..self.pending {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("no acknowledgement from the broker in time".into()),
            }
        }
        Ok(())
    }
}

/// Produce `json`, a message the request's own checks accepted (`Db::prepare_message`
/// validated it as the store would), keyed by the project, to the sink of
/// `serve --produce-to`; the answer waits for `acks`.
pub(crate) fn offer(project: &Project, acks: &mut Option<Acks>, json: &[u8]) -> crate::Result<()> {
    let Some(sink) = project.sink.as_ref() else {
        return Err(crate::Error::io(
            "produce",
            "--produce-to",
            std::io::Error::other("no topic configured"),
        ));
    };
    let acks = acks.get_or_insert_with(Acks::new);
    let record = BaseRecord::with_opaque_to(&sink.topic, Box::new(acks.tx.clone()))
        .key(project.name.as_str())
        .payload(json);
    match sink.producer.send(record) {
        Ok(()) => {
            acks.pending += 1;
            Ok(())
        }
        Err((e, _)) => Err(crate::Error::io(
            "produce",
            sink.topic.as_str(),
            std::io::Error::other(e.to_string()),
        )),
    }
}
