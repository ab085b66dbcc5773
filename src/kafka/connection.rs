//! librdkafka's error events and token requests for one client → what the operator must fix.
//!
//! librdkafka retries every failed connection, the hopeless ones too: a wrong password, a
//! broker certificate no configured CA signed, a client certificate the broker refuses, TLS
//! spoken to a plaintext port or the reverse. Those are told apart here, so start-up can stop
//! with one line naming the problem instead of waiting in silence. Everything else (a broker
//! down or restarting) is a complaint, kept to say what a waiting client waits for. AWS MSK
//! IAM tokens are made here too, when asked.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::OAuthToken;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;

use super::msk_iam::MskIam;
use super::security::Cluster;

/// What one client has learned of its connection; shared by its context's callbacks.
pub struct Connection {
    servers: String,
    /// The first error no retry can fix, as a sentence naming the setting to look at.
    problem: Mutex<Option<String>>,
    /// Whether `problem` is set: a producer asks once per event.
    troubled: AtomicBool,
    /// The last other error, for lines saying what a client waits for.
    complaint: Mutex<Option<String>>,
    msk_iam: Option<MskIam>,
}

impl Connection {
    pub fn new(cluster: &Cluster) -> Self {
        Connection {
            servers: cluster.servers.clone(),
            problem: Mutex::new(None),
            troubled: AtomicBool::new(false),
            complaint: Mutex::new(None),
            msk_iam: cluster.security.msk_iam_region().map(MskIam::new),
        }
    }

    /// Called with each error event.
    pub fn observe(&self, error: &ClientError, reason: &str) {
        if let Some(problem) = diagnose(error.rdkafka_error_code(), reason) {
            return self.misconfigured(problem);
        }
        let mut complaint = self.complaint.lock().unwrap_or_else(|e| e.into_inner());
        // "1/1 brokers are down" sums up; the error before it says why.
        if complaint.is_none()
            || error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown)
        {
            *complaint = Some(format!("{error}: {reason}"));
        }
    }

    /// Called with each of librdkafka's log lines; connection failures (`FAIL`) may name a
    /// misconfiguration that no error event reports.
    pub fn observe_log(&self, facility: &str, message: &str) {
        if facility == "FAIL"
            && let Some(problem) = diagnose(None, message)
        {
            self.misconfigured(problem);
        }
        log(facility, message);
    }

    /// Keeps the first problem seen: later ones follow from it.
    fn misconfigured(&self, problem: String) {
        let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(problem);
        self.troubled.store(true, Ordering::Release);
    }

    /// The configuration problem seen, as one line naming the cluster.
    pub fn problem(&self) -> Option<String> {
        if !self.troubled.load(Ordering::Acquire) {
            return None;
        }
        let problem = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        problem
            .as_ref()
            .map(|p| format!("cannot connect to Kafka at {}: {p}", self.servers))
    }

    /// The last transient error, if any came.
    pub fn complaint(&self) -> Option<String> {
        self.complaint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A token for OAUTHBEARER: signed for MSK IAM, or an error librdkafka reports (and
    /// retries) when no token source is configured.
    pub fn token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        match &self.msk_iam {
            Some(msk_iam) => msk_iam.token().map_err(|e| e as Box<dyn std::error::Error>),
            None => Err(
                "no OAUTHBEARER token source: set KAFKA_SASL_MECHANISM=AWS_MSK_IAM, \
                 or librdkafka's sasl.oauthbearer.* options"
                    .into(),
            ),
        }
    }
}

/// librdkafka's log lines, at debug level: what is worth telling the operator is worded by
/// [`Connection::observe`] and [`Connection::observe_log`].
fn log(facility: &str, message: &str) {
    tracing::debug!(target: "librdkafka", "{facility} {message}");
}

/// The TLS alerts a broker sends when it refuses the client's certificate, missing or
/// untrusted. Under TLS 1.3 the broker checks it after the client has finished its handshake,
/// so the alert arrives as a failed read (a transport error, retried forever), not as a
/// failed handshake.
const REFUSED_CERTIFICATE: [&str; 4] = [
    "alert bad certificate",
    "alert certificate required",
    "alert certificate unknown",
    "alert unknown ca",
];

/// Whether an error event or a log line is a misconfiguration, and if so what to check.
/// The texts matched are librdkafka's own (2.12), which name the likely cause; some come only
/// as log lines (a connection closed during the first request is logged, not reported).
pub fn diagnose(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<String> {
    let cause = reason
        .split_once(": ")
        .map_or(reason, |(_, rest)| rest)
        .split(" (after ")
        .next()
        .unwrap_or(reason);
    if code == Some(RDKafkaErrorCode::Authentication)
        || reason.contains("SASL authentication error")
    {
        Some(format!(
            "authentication failed; check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and the \
             password ({cause})"
        ))
    } else if reason.contains("connecting to a PLAINTEXT broker listener") {
        Some(
            "the broker does not speak TLS on this port; KAFKA_SECURITY_PROTOCOL is SSL or \
             SASL_SSL but the listener is PLAINTEXT or SASL_PLAINTEXT"
                .into(),
        )
    } else if reason.contains("certificate verify failed") {
        Some(format!(
            "the broker's certificate is not trusted; set KAFKA_SSL_CA_LOCATION to the CA that \
             signed it, and check the host name it was issued for ({cause})"
        ))
    } else if REFUSED_CERTIFICATE
        .iter()
        .any(|alert| reason.contains(alert))
    {
        Some(format!(
            "the broker refused this client's certificate: the listener requires one it trusts \
             (mutual TLS); set KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION to a \
             certificate and key that its truststore accepts ({cause})"
        ))
    } else if code == Some(RDKafkaErrorCode::SSL) || reason.contains("SSL handshake failed") {
        Some(format!(
            "the TLS handshake failed; check the KAFKA_SSL_* settings ({cause})"
        ))
    } else if reason.contains("incorrect security.protocol configuration")
        || (reason.contains("Disconnected") && reason.contains("in state APIVERSION_QUERY"))
    {
        Some(format!(
            "the broker closed the connection at its first request, as a TLS or SASL \
             listener does to a client that does not speak that; check \
             KAFKA_SECURITY_PROTOCOL ({cause})"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopeless_errors_name_the_setting_and_the_rest_are_transient() {
        let wrong_password = diagnose(
            Some(RDKafkaErrorCode::Authentication),
            "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication \
             failed during authentication due to invalid credentials with SASL mechanism \
             SCRAM-SHA-512 (after 305ms in state AUTH_REQ)",
        )
        .unwrap();
        assert!(
            wrong_password.contains("KAFKA_SASL_USERNAME"),
            "{wrong_password}"
        );
        assert!(
            wrong_password.contains("invalid credentials"),
            "{wrong_password}"
        );
        assert!(!wrong_password.contains("after 305ms"), "{wrong_password}");

        let unknown_ca = diagnose(
            Some(RDKafkaErrorCode::SSL),
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL \
             routines::certificate verify failed: broker certificate could not be verified",
        )
        .unwrap();
        assert!(unknown_ca.contains("KAFKA_SSL_CA_LOCATION"), "{unknown_ca}");

        let no_client_certificate = diagnose(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://127.0.0.1:9094/bootstrap: Receive failed: SSL transport error: \
             error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42 \
             (after 12ms in state UP)",
        )
        .unwrap();
        assert!(
            no_client_certificate
                .contains("KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION"),
            "{no_client_certificate}"
        );
        assert!(
            no_client_certificate.contains("alert bad certificate"),
            "{no_client_certificate}"
        );

        let tls_to_plaintext = diagnose(
            Some(RDKafkaErrorCode::SSL),
            "ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: error:0A00010B:SSL \
             routines::wrong version number: connecting to a PLAINTEXT broker listener? \
             (after 1ms in state SSL_HANDSHAKE)",
        )
        .unwrap();
        assert!(
            tls_to_plaintext.contains("does not speak TLS"),
            "{tls_to_plaintext}"
        );

        let plaintext_to_tls = diagnose(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9093/bootstrap: Disconnected while requesting ApiVersion: might be \
             caused by incorrect security.protocol configuration (connecting to a SSL \
             listener?) or broker version is < 0.10 (see api.version.request) (after 3ms in \
             state APIVERSION_QUERY)",
        )
        .unwrap();
        assert!(
            plaintext_to_tls.contains("KAFKA_SECURITY_PROTOCOL"),
            "{plaintext_to_tls}"
        );

        for transient in [
            (
                RDKafkaErrorCode::BrokerTransportFailure,
                "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection \
                 refused (after 0ms in state CONNECT)",
            ),
            (RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down"),
        ] {
            assert_eq!(diagnose(Some(transient.0), transient.1), None);
        }
        assert_eq!(diagnose(None, "anything"), None);
    }

    #[test]
    fn a_connection_keeps_the_first_problem_and_the_last_complaint() {
        let connection = Connection::new(&Cluster::plaintext("b:9092"));
        let down = ClientError::Global(RDKafkaErrorCode::AllBrokersDown);
        connection.observe(&down, "1/1 brokers are down");
        assert_eq!(connection.problem(), None);
        assert!(connection.complaint().unwrap().contains("brokers are down"));
        let auth = ClientError::Global(RDKafkaErrorCode::Authentication);
        connection.observe(&auth, "x: SASL authentication error: first");
        connection.observe(&auth, "x: SASL authentication error: second");
        let problem = connection.problem().unwrap();
        assert!(problem.starts_with("cannot connect to Kafka at b:9092: authentication"));
        assert!(problem.contains("first"), "{problem}");
        assert!(
            connection.token().is_err(),
            "no token source without MSK IAM"
        );
    }
}
