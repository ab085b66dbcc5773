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

impl Broker {
    pub fn start() -> Broker {
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
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={}\n\
                 num.partitions=1\n\
                 offsets.topic.replication.factor=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n",
                dir.path().join("logs").display()
            ),
        )
        .unwrap();
        let format = Command::new("java")
            .args([
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                CLUSTER_ID,
                "-c",
            ])
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
    Command::new("java")
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
