//! Keeps a client from waiting forever after a lone broker restarts or stalls.
//!
//! librdkafka 2.12 forgets every broker it learned when a metadata answer lists none (a
//! single broker that just came back is fenced by its controller until it registers again,
//! and answers with topics but no brokers). With no broker left it never sends another
//! metadata request, so its own re-bootstrap timer never starts and the client waits forever
//! (see librdkafka issue #5511). Its statistics show that state; the client is then given the
//! bootstrap servers again, which is a no-op for addresses it still has.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::{Client, ClientContext};
use serde::Deserialize;

/// How often librdkafka reports statistics, in ms: the longest a client stays without brokers
/// before it is healed.
pub const STATS_INTERVAL_MS: &str = "5000";

/// Whether the client's last statistics named no broker it can talk to.
#[derive(Default)]
pub struct BrokerWatch {
    brokerless: AtomicBool,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: HashMap<String, BrokerStatistics>,
}

#[derive(Deserialize)]
struct BrokerStatistics {
    source: String,
}

impl BrokerWatch {
    /// Called with each statistics report (`ClientContext::stats_raw`). The group
    /// coordinator is a logical handle: it is not a broker address the client can use.
    pub fn observe(&self, json: &[u8]) {
        if let Ok(statistics) = serde_json::from_slice::<Statistics>(json) {
            self.brokerless
                .store(brokerless(&statistics), Ordering::Relaxed);
        }
    }

    /// Gives `client` the bootstrap servers again if it has no broker left; true if it had to.
    pub fn heal<C: ClientContext>(&self, client: &Client<C>, servers: &str) -> bool {
        // A load first: the producer asks once per event.
        if !self.brokerless.load(Ordering::Relaxed)
            || !self.brokerless.swap(false, Ordering::Relaxed)
        {
            return false;
        }
        let Ok(list) = CString::new(servers) else {
            return false;
        };
        // SAFETY: the handle is alive for the borrow of `client`; librdkafka copies the list,
        // and rd_kafka_brokers_add may be called from any thread.
        unsafe { rdkafka::bindings::rd_kafka_brokers_add(client.native_ptr(), list.as_ptr()) };
        true
    }
}

fn brokerless(statistics: &Statistics) -> bool {
    statistics
        .brokers
        .values()
        .all(|b| b.source == "logical" || b.source == "internal")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(json: &str) -> bool {
        let watch = BrokerWatch::default();
        watch.observe(json.as_bytes());
        watch.brokerless.load(Ordering::Relaxed)
    }

    #[test]
    fn only_a_client_without_any_broker_address_is_brokerless() {
        let learned = r#"{"name":"c","brokers":{
            "127.0.0.1:9092/1":{"source":"learned","state":"UP"},
            "GroupCoordinator":{"source":"logical","state":"UP"}}}"#;
        assert!(!watch(learned));
        let down = r#"{"brokers":{"127.0.0.1:9092/1":{"source":"learned","state":"DOWN"}}}"#;
        assert!(
            !watch(down),
            "a broker that is down is still an address to retry"
        );
        let bootstrap = r#"{"brokers":{"127.0.0.1:9092/bootstrap":{"source":"configured"}}}"#;
        assert!(!watch(bootstrap));
        let forgotten = r#"{"brokers":{"GroupCoordinator":{"source":"logical","state":"DOWN"}}}"#;
        assert!(watch(forgotten));
        assert!(watch(r#"{"brokers":{}}"#));
        assert!(!watch("not json"), "an unreadable report changes nothing");
    }
}
