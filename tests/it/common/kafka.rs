//! A real Apache Kafka broker (KRaft, one node) on 127.0.0.1 for one test: started from the
//! jars `scripts/test.sh` fetches, stopped by PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::free_port;

/// A fixed cluster id (any 16 bytes in URL-safe base64 will do).
const CLUSTER_ID: &str = "cGFnZXZpZXctdGVzdA";

pub struct Broker {
    child: Child,
    pub bootstrap: String,
    classpath: String,
    dir: tempfile::TempDir,
}

/// The JVM as the tests run it: the quick compiler only, and one GC thread. A test broker
/// lives a minute and serves a few thousand records, so the optimising compiler's work
/// would not pay back; without it a broker starts on about half the CPU (3.5 → 1.9 s), which
/// the tests running beside it on a 2-core machine get instead.
fn java() -> Command {
    let mut java = Command::new("java");
    java.args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]);
    java
}

fn libs() -> PathBuf {
    let path = super::installed("PAGEVIEW_KAFKA_LIBS", "kafka/libs");
    let has_broker = std::fs::read_dir(&path).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
    });
    assert!(
        has_broker,
        "no Kafka jars in {}: run scripts/test.sh, which fetches them",
        path.display()
    );
    path
}

/// What a secured broker is reached with: its TLS and SASL listeners, and the files and
/// user a client needs.
pub struct Secured {
    /// `localhost:PORT`: SASL_SSL with SCRAM-SHA-512, for [`SCRAM_USER`].
    pub sasl_ssl: String,
    /// `localhost:PORT`: SSL that requires a client certificate signed by the CA.
    pub ssl: String,
    /// `127.0.0.1:PORT`: SASL_PLAINTEXT with OAUTHBEARER, whose tokens the broker checks
    /// as unsecured JWTs (Kafka's default validator, for tests only).
    pub oauth: String,
    /// PEM files: the CA that signed the broker's and the client's certificates, the
    /// client's certificate and key, and a CA that signed neither.
    pub ca: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    _files: tempfile::TempDir,
}

pub const SCRAM_USER: &str = "pageview";
pub const SCRAM_PASSWORD: &str = "pageview-secret";
/// Password of the test's keystores.
const STORE_PASSWORD: &str = "test-store";

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("", "", "", &[])
    }

    /// A broker that also listens with SASL_SSL (SCRAM-SHA-512) and with SSL requiring a
    /// client certificate; certificates made with the JDK's keytool, the SCRAM user
    /// created when the broker's storage is formatted.
    pub fn start_secured() -> (Broker, Secured) {
        let files = tempfile::tempdir().unwrap();
        let certificates = files.path();
        make_certificates(certificates);
        let (sasl_ssl, ssl, oauth) = (free_port(), free_port(), free_port());
        let keystore = certificates.join("broker.p12");
        let truststore = certificates.join("truststore.p12");
        let listeners = format!(
            ",SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{ssl},OAUTH://127.0.0.1:{oauth}"
        );
        // Advertised as localhost, the name the broker's certificate is issued for.
        let advertised = format!(
            ",SASL_SSL://localhost:{sasl_ssl},SSL://localhost:{ssl},OAUTH://127.0.0.1:{oauth}"
        );
        let config = format!(
            "inter.broker.listener.name=PLAINTEXT\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER\n\
             listener.name.oauth.oauthbearer.sasl.jaas.config=\
             org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
             unsecuredLoginStringClaim_sub=\"broker\";\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             ssl.keystore.type=PKCS12\n\
             ssl.keystore.location={}\n\
             ssl.keystore.password={STORE_PASSWORD}\n\
             ssl.truststore.type=PKCS12\n\
             ssl.truststore.location={}\n\
             ssl.truststore.password={STORE_PASSWORD}\n\
             listener.name.ssl.ssl.client.auth=required\n",
            keystore.display(),
            truststore.display()
        );
        let scram = format!("SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]");
        let broker = Broker::start_with(&listeners, &advertised, &config, &["--add-scram", &scram]);
        let secured = Secured {
            sasl_ssl: format!("localhost:{sasl_ssl}"),
            ssl: format!("localhost:{ssl}"),
            oauth: format!("127.0.0.1:{oauth}"),
            ca: certificates.join("ca.pem"),
            client_certificate: certificates.join("client.pem"),
            client_key: certificates.join("client.key"),
            other_ca: certificates.join("other-ca.pem"),
            _files: files,
        };
        (broker, secured)
    }

    /// `listeners` and `advertised` are added to the PLAINTEXT and controller listeners,
    /// `config` to the properties, `format` to the storage format command.
    fn start_with(listeners: &str, advertised: &str, config: &str, format: &[&str]) -> Broker {
        let classpath = format!("{}/*", libs().display());
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        let props = dir.path().join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}{listeners}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}{advertised}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,\
                 SASL_SSL:SASL_SSL,SSL:SSL,OAUTH:SASL_PLAINTEXT\n\
                 log.dirs={}\n\
                 num.partitions=1\n\
                 offsets.topic.replication.factor=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n\
                 {config}",
                dir.path().join("logs").display()
            ),
        )
        .unwrap();
        let format = java()
            .args([
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                CLUSTER_ID,
            ])
            .args(format)
            .arg("-c")
            .arg(&props)
            .output()
            .expect("java runs");
        assert!(
            format.status.success(),
            "{}",
            String::from_utf8_lossy(&format.stderr)
        );
        let child = spawn(&classpath, dir.path());
        let broker = Broker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            classpath,
            dir,
        };
        broker.wait_until_ready();
        broker
    }

    /// Kills the broker at once, as a crash or a lost machine would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered, as
    /// with a long garbage-collection pause or a stalled machine.
    pub fn freeze(&self) {
        // SAFETY: signals the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Returns once the broker serves again, so that a client made afterwards does not
    /// bootstrap from the moment when, just thawed, it answers metadata with no brokers.
    pub fn thaw(&self) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        self.wait_until_ready();
    }

    /// Starts the killed broker again on the same ports and data.
    pub fn restart(&mut self) {
        self.child = spawn(&self.classpath, self.dir.path());
        self.wait_until_ready();
    }

    /// Ready means metadata that names a broker and a leader for every partition. Each try
    /// uses a new client: one that got metadata without brokers forgets its bootstrap
    /// address and would never answer again.
    fn wait_until_ready(&self) {
        let serving = || {
            let client: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .create()
                .unwrap();
            client
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| {
                    !m.brokers().is_empty()
                        && m.topics()
                            .iter()
                            .flat_map(|t| t.partitions())
                            .all(|p| p.leader() >= 0)
                })
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !serving() {
            assert!(
                Instant::now() < deadline,
                "the broker did not answer in 90 s; its log: {}",
                std::fs::read_to_string(self.dir.path().join("kafka.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn spawn(classpath: &str, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("kafka.log"))
        .unwrap();
    java()
        .args(["-Xmx512m", "-cp", classpath, "kafka.Kafka"])
        .arg(dir.join("server.properties"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("java runs")
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and, signed by it, the broker's certificate (for `localhost` and 127.0.0.1, in a
/// PKCS#12 keystore, with the CA in a truststore) and a client's (as PEM files); and a second
/// CA that signed nothing here. All made with the JDK's keytool.
fn make_certificates(dir: &std::path::Path) {
    let keytool = |args: &[&str]| {
        let output = Command::new("keytool")
            .args(args)
            .args(["-storepass", STORE_PASSWORD])
            .current_dir(dir)
            .output()
            .expect("the JDK's keytool runs");
        assert!(
            output.status.success(),
            "keytool {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let key_pair = |store: &str, alias: &str, name: &str, extra: &[&str]| {
        let mut args = vec![
            "-genkeypair",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-validity",
            "2",
            "-storetype",
            "PKCS12",
            "-keystore",
            store,
            "-alias",
            alias,
            "-dname",
            name,
        ];
        args.extend_from_slice(extra);
        keytool(&args);
    };
    let pem = |store: &str, alias: &str, file: &str| {
        let certificate = keytool(&["-exportcert", "-rfc", "-keystore", store, "-alias", alias]);
        std::fs::write(dir.join(file), certificate).unwrap();
    };
    // A certificate for `alias` in `store`, signed by the CA.
    let signed = |store: &str, alias: &str, extension: &str| {
        let request = keytool(&["-certreq", "-keystore", store, "-alias", alias]);
        std::fs::write(dir.join(format!("{alias}.csr")), request).unwrap();
        let certificate = keytool(&[
            "-gencert",
            "-keystore",
            "ca.p12",
            "-alias",
            "ca",
            "-validity",
            "2",
            "-rfc",
            "-infile",
            &format!("{alias}.csr"),
            "-ext",
            extension,
        ]);
        std::fs::write(dir.join(format!("{alias}.pem")), certificate).unwrap();
        keytool(&[
            "-importcert",
            "-noprompt",
            "-keystore",
            store,
            "-alias",
            "ca",
            "-file",
            "ca.pem",
        ]);
        keytool(&[
            "-importcert",
            "-keystore",
            store,
            "-alias",
            alias,
            "-file",
            &format!("{alias}.pem"),
        ]);
    };
    key_pair("ca.p12", "ca", "CN=pageview test CA", &["-ext", "bc:c"]);
    pem("ca.p12", "ca", "ca.pem");
    key_pair("other-ca.p12", "ca", "CN=some other CA", &["-ext", "bc:c"]);
    pem("other-ca.p12", "ca", "other-ca.pem");
    key_pair("broker.p12", "broker", "CN=localhost", &[]);
    signed("broker.p12", "broker", "SAN=dns:localhost,ip:127.0.0.1");
    keytool(&[
        "-importcert",
        "-noprompt",
        "-storetype",
        "PKCS12",
        "-keystore",
        "truststore.p12",
        "-alias",
        "ca",
        "-file",
        "ca.pem",
    ]);
    key_pair("client.p12", "client", "CN=pageview client", &[]);
    signed("client.p12", "client", "KeyUsage=digitalSignature");
    // keytool cannot write a private key as PEM; the JDK can, in a few lines of Java.
    let key = java()
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/common/PemKey.java"
        ))
        .args(["client.p12", STORE_PASSWORD, "client"])
        .current_dir(dir)
        .output()
        .expect("java runs");
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    std::fs::write(dir.join("client.key"), key.stdout).unwrap();
}
