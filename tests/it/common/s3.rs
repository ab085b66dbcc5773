//! LocalStack (the S3 emulator the original design uses) on 127.0.0.1 for one test: started
//! from the Python environment `scripts/test.sh` installs, stopped by PID when dropped. Also
//! reads what the pipeline wrote back into a folder laid out as local storage is, so the
//! checks written for local storage apply to S3 unchanged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::free_port;

pub const CHECKPOINTS: &str = "pageview-pipeline-local-checkpoints";

pub struct LocalStack {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

pub fn python() -> PathBuf {
    let path = super::installed("PAGEVIEW_LOCALSTACK_PYTHON", "localstack/bin/python");
    assert!(
        path.exists(),
        "no LocalStack at {}: run scripts/test.sh, which installs it",
        path.display()
    );
    path
}

impl LocalStack {
    /// A running LocalStack with the pipeline's buckets made by `pageview buckets create`.
    pub fn with_buckets() -> LocalStack {
        let localstack = LocalStack::start();
        let out = localstack.pageview(&["buckets", "create"]);
        assert!(out.status.success(), "{}", super::stderr(&out));
        localstack
    }

    pub fn start() -> LocalStack {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("localstack.log")).unwrap();
        let child = Command::new(python())
            .args(["-m", "localstack.runtime.main"])
            .current_dir(dir.path())
            .env("SERVICES", "s3")
            .env("EAGER_SERVICE_LOADING", "1")
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            // The sandbox has /.dockerenv; LocalStack must not think it runs in a container.
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", dir.path().join("state"))
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DNS_ADDRESS", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("LocalStack starts");
        let mut localstack = LocalStack {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        };
        localstack.wait_until_ready();
        localstack
    }

    fn wait_until_ready(&mut self) {
        let health = format!("{}/_localstack/health", self.endpoint);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = Command::new("curl")
                .args(["-sf", &health])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&out.stdout);
            if body.contains("\"s3\": \"running\"") || body.contains("\"s3\": \"available\"") {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("LocalStack exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "LocalStack not ready in 90 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("localstack.log")).unwrap_or_default()
    }

    /// Stops the process (SIGSTOP): connections stay open but nothing is answered, as when
    /// S3 stalls. LocalStack's community edition keeps its state only in memory, so a real
    /// restart would lose every object the test then checks.
    pub fn freeze(&self) {
        // SAFETY: signals the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn thaw(&self) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Sets what the binary needs to reach this LocalStack.
    pub fn env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("LOCALSTACK_ENDPOINT")
    }

    /// Runs the binary against this LocalStack.
    pub fn pageview(&self, args: &[&str]) -> std::process::Output {
        self.env(&mut super::pageview())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a Python snippet with boto3 (LocalStack's environment has it) and `s3`, a client
    /// for this LocalStack, defined; returns its stdout.
    pub fn boto3(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, json\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n",
            self.endpoint
        );
        let out = Command::new(python())
            .args(["-c", &format!("{prelude}{script}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Multipart uploads started and neither completed nor aborted, in `bucket`.
    pub fn open_uploads(&self, bucket: &str) -> usize {
        self.boto3(&format!(
            "print(len(s3.list_multipart_uploads(Bucket='{bucket}').get('Uploads', [])))"
        ))
        .trim()
        .parse()
        .unwrap()
    }

    /// Makes `root` hold exactly the objects of `buckets`: `<bucket>/<key>` as local storage
    /// lays them out, staged objects (`<bucket>/_staging/<id>`) in `root/.staging`. Objects
    /// already there with the same size are not fetched again.
    pub fn mirror(&self, buckets: &[&str], root: &Path) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut wanted = std::collections::HashSet::new();
        for bucket in buckets {
            let store = AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_bucket_name(*bucket)
                .build()
                .unwrap();
            let objects: Vec<object_store::ObjectMeta> = runtime.block_on(async {
                use futures_util::TryStreamExt;
                store.list(None).try_collect().await.unwrap()
            });
            for object in objects {
                let key = object.location.to_string();
                let local = match key.strip_prefix("_staging/") {
                    Some(id) => root.join(".staging").join(format!("{bucket}-{id}")),
                    None => root.join(bucket).join(&key),
                };
                wanted.insert(local.clone());
                if std::fs::metadata(&local).is_ok_and(|m| m.len() == object.size) {
                    continue;
                }
                let fetched = runtime.block_on(async {
                    store
                        .get(&ObjectPath::from(key.as_str()))
                        .await?
                        .bytes()
                        .await
                });
                // Deleted since it was listed (a staged object just published): skip it.
                let Ok(bytes) = fetched else { continue };
                std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                std::fs::write(&local, bytes).unwrap();
            }
        }
        remove_others(root, &wanted);
    }
}

/// Removes every file under `dir` not in `keep` (logs stay: they are not mirrored).
fn remove_others(dir: &Path, keep: &std::collections::HashSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_others(&path, keep);
        } else if path.extension() != Some("log".as_ref()) && !keep.contains(&path) {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("LocalStack log:\n{}", self.log());
        }
    }
}
