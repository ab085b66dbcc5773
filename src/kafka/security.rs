//! Security settings → librdkafka properties: TLS, SASL (PLAIN, SCRAM, OAUTHBEARER and AWS
//! MSK IAM) and pass-through options, for every client of one cluster. Secrets never reach a
//! message: [`Secret`] prints as `***`, and options are named by key only.

use std::fmt;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn is_sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
}

/// `sasl.mechanism`, and AWS MSK's IAM authentication, which is OAUTHBEARER with a token
/// pageview signs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// A token from librdkafka's own `sasl.oauthbearer.*` options (`--kafka-option`).
    #[value(name = "OAUTHBEARER")]
    OAuthBearer,
    /// OAUTHBEARER with a SigV4-signed token from the usual AWS credentials, refreshed
    /// before it expires.
    #[value(name = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::AwsMskIam => "AWS_MSK_IAM",
        }
    }

    /// Whether it authenticates with a username and password.
    pub fn needs_password(self) -> bool {
        matches!(
            self,
            Mechanism::Plain | Mechanism::ScramSha256 | Mechanism::ScramSha512
        )
    }

    fn librdkafka_name(self) -> &'static str {
        match self {
            Mechanism::AwsMskIam => "OAUTHBEARER",
            other => other.as_str(),
        }
    }
}

/// A value that must never be shown: it prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A SASL identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sasl {
    Password {
        mechanism: Mechanism,
        username: String,
        password: Secret,
    },
    /// librdkafka gets its token from the `sasl.oauthbearer.*` pass-through options.
    OAuthBearer,
    /// Tokens signed for this region with the AWS credentials of the environment.
    AwsMskIam { region: String },
}

/// Files for TLS; each was readable when the settings were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificates the broker's certificate must chain to [default: the system's].
    pub ca: Option<PathBuf>,
    /// The client's certificate and key, for brokers that authenticate clients by TLS.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub key_password: Option<Secret>,
}

/// How every client of the cluster connects, validated (see `config::KafkaSecurityArgs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub protocol: Protocol,
    pub sasl: Option<Sasl>,
    pub tls: Tls,
    /// `--kafka-option KEY=VALUE`, in order; values may be secrets and are never shown.
    pub options: Vec<(String, Secret)>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            protocol: Protocol::Plaintext,
            sasl: None,
            tls: Tls::default(),
            options: Vec::new(),
        }
    }
}

/// Why a librdkafka property is not a pass-through option's to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// It has a setting of its own, named here.
    Setting(&'static str),
    /// pageview sets it itself, for the reason given.
    Pageviews(&'static str),
}

/// Properties pageview sets itself or has a setting of its own for: a pass-through option
/// may tune anything else, never these.
pub const RESERVED: &[(&str, Reserved)] = &[
    (
        "bootstrap.servers",
        Reserved::Setting("KAFKA_BOOTSTRAP_SERVERS"),
    ),
    (
        "metadata.broker.list",
        Reserved::Setting("KAFKA_BOOTSTRAP_SERVERS"),
    ),
    (
        "security.protocol",
        Reserved::Setting("KAFKA_SECURITY_PROTOCOL"),
    ),
    ("sasl.mechanism", Reserved::Setting("KAFKA_SASL_MECHANISM")),
    ("sasl.mechanisms", Reserved::Setting("KAFKA_SASL_MECHANISM")),
    ("sasl.username", Reserved::Setting("KAFKA_SASL_USERNAME")),
    ("sasl.password", Reserved::Setting("KAFKA_SASL_PASSWORD")),
    (
        "ssl.ca.location",
        Reserved::Setting("KAFKA_SSL_CA_LOCATION"),
    ),
    (
        "ssl.certificate.location",
        Reserved::Setting("KAFKA_SSL_CERTIFICATE_LOCATION"),
    ),
    (
        "ssl.key.location",
        Reserved::Setting("KAFKA_SSL_KEY_LOCATION"),
    ),
    (
        "ssl.key.password",
        Reserved::Setting("KAFKA_SSL_KEY_PASSWORD"),
    ),
    ("group.id", Reserved::Setting("KAFKA_CONSUMER_GROUP")),
    (
        "group.instance.id",
        Reserved::Setting("KAFKA_GROUP_INSTANCE_ID"),
    ),
    (
        "session.timeout.ms",
        Reserved::Setting("KAFKA_SESSION_TIMEOUT_MS"),
    ),
    (
        "enable.auto.commit",
        Reserved::Pageviews("checkpoints decide what is committed"),
    ),
    (
        "enable.auto.offset.store",
        Reserved::Pageviews("checkpoints decide what is committed"),
    ),
    (
        "partition.assignment.strategy",
        Reserved::Pageviews("exactly-once needs every partition revoked before any is reassigned"),
    ),
    (
        "enable.idempotence",
        Reserved::Pageviews("the generator never writes an event twice"),
    ),
    (
        "acks",
        Reserved::Pageviews("the generator waits for every replica"),
    ),
    (
        "message.timeout.ms",
        Reserved::Pageviews("the generator never gives up on an event"),
    ),
    (
        "statistics.interval.ms",
        Reserved::Pageviews("lag and broker health come from the statistics"),
    ),
];

impl Security {
    /// Adds the security settings and then the pass-through options to `config`, which holds
    /// the client's own settings: an option may override a default of pageview's.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        match &self.sasl {
            Some(Sasl::Password {
                mechanism,
                username,
                password,
            }) => {
                config
                    .set("sasl.mechanism", mechanism.librdkafka_name())
                    .set("sasl.username", username)
                    .set("sasl.password", password.expose());
            }
            Some(Sasl::OAuthBearer | Sasl::AwsMskIam { .. }) => {
                config.set("sasl.mechanism", "OAUTHBEARER");
            }
            None => {}
        }
        if self.protocol.is_tls() {
            match &self.tls.ca {
                Some(ca) => config.set("ssl.ca.location", ca.to_string_lossy()),
                // OpenSSL is built into the binary and knows no system CA folder: librdkafka
                // looks in the usual places instead.
                None => config.set("ssl.ca.location", "probe"),
            };
            if let Some(certificate) = &self.tls.certificate {
                config.set("ssl.certificate.location", certificate.to_string_lossy());
            }
            if let Some(key) = &self.tls.key {
                config.set("ssl.key.location", key.to_string_lossy());
            }
            if let Some(password) = &self.tls.key_password {
                config.set("ssl.key.password", password.expose());
            }
        }
        for (key, value) in &self.options {
            config.set(key, value.expose());
        }
    }

    /// The region MSK IAM tokens are signed for, when that is how the client authenticates.
    pub fn msk_iam_region(&self) -> Option<&str> {
        match &self.sasl {
            Some(Sasl::AwsMskIam { region }) => Some(region),
            _ => None,
        }
    }

    /// How clients connect, for log lines: `SASL_SSL, SCRAM-SHA-512 as alice`.
    pub fn describe(&self) -> String {
        let mut line = self.protocol.as_str().to_string();
        match &self.sasl {
            Some(Sasl::Password {
                mechanism,
                username,
                ..
            }) => line.push_str(&format!(", {} as {username}", mechanism.as_str())),
            Some(Sasl::OAuthBearer) => line.push_str(", OAUTHBEARER"),
            Some(Sasl::AwsMskIam { region }) => {
                line.push_str(&format!(", AWS MSK IAM in {region}"))
            }
            None => {}
        }
        if self.tls.certificate.is_some() {
            line.push_str(", client certificate");
        }
        line
    }
}

/// Where a cluster is and how to reach it: what every client of it is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub servers: String,
    pub security: Security,
}

impl Cluster {
    /// A cluster reached without TLS or SASL: a local broker, as benchmarks use.
    pub fn plaintext(servers: &str) -> Self {
        Cluster {
            servers: servers.to_string(),
            security: Security::default(),
        }
    }

    /// A client configuration: the servers, `own` (the client's settings), then security and
    /// the pass-through options.
    pub fn client_config(&self, own: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.servers);
        // Some misconfigurations show only in log lines, a connection closed at its first
        // request only at debug level (see `Connection::observe_log`): every line must reach
        // the client, whatever LOG_LEVEL lets through to the log.
        config.set_log_level(RDKafkaLogLevel::Debug);
        for (key, value) in own {
            config.set(*key, *value);
        }
        self.security.apply(&mut config);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scram() -> Security {
        Security {
            protocol: Protocol::SaslSsl,
            sasl: Some(Sasl::Password {
                mechanism: Mechanism::ScramSha512,
                username: "alice".into(),
                password: Secret::new("hunter2".into()),
            }),
            tls: Tls {
                ca: Some("/ca.pem".into()),
                ..Tls::default()
            },
            options: vec![("linger.ms".into(), Secret::new("50".into()))],
        }
    }

    #[test]
    fn security_becomes_librdkafka_properties_and_options_come_last() {
        let cluster = Cluster {
            servers: "b:9093".into(),
            security: scram(),
        };
        let config = cluster.client_config(&[("linger.ms", "5"), ("acks", "all")]);
        assert_eq!(config.get("bootstrap.servers"), Some("b:9093"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("alice"));
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert_eq!(config.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(
            config.get("linger.ms"),
            Some("50"),
            "an option tunes a default"
        );
        assert_eq!(config.get("acks"), Some("all"));
    }

    #[test]
    fn tls_without_a_ca_probes_the_system_folders_and_plaintext_sets_no_tls() {
        let tls = Security {
            protocol: Protocol::Ssl,
            ..Security::default()
        };
        let config = Cluster {
            servers: "b".into(),
            security: tls,
        }
        .client_config(&[]);
        assert_eq!(config.get("ssl.ca.location"), Some("probe"));
        let plain = Cluster::plaintext("b").client_config(&[]);
        assert_eq!(plain.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(plain.get("ssl.ca.location"), None);
        assert_eq!(plain.get("sasl.mechanism"), None);
    }

    #[test]
    fn msk_iam_is_oauthbearer_with_a_region() {
        let msk = Security {
            protocol: Protocol::SaslSsl,
            sasl: Some(Sasl::AwsMskIam {
                region: "eu-west-1".into(),
            }),
            ..Security::default()
        };
        assert_eq!(msk.msk_iam_region(), Some("eu-west-1"));
        assert_eq!(msk.describe(), "SASL_SSL, AWS MSK IAM in eu-west-1");
        let config = Cluster {
            servers: "b".into(),
            security: msk,
        }
        .client_config(&[]);
        assert_eq!(config.get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(scram().msk_iam_region(), None);
    }

    #[test]
    fn secrets_never_show() {
        let security = scram();
        let shown = format!("{security:?} {}", security.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            !shown.contains("\"50\""),
            "option values are not shown: {shown}"
        );
        assert_eq!(security.describe(), "SASL_SSL, SCRAM-SHA-512 as alice");
    }
}
