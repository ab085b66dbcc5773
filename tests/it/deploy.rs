//! The deployment files, checked statically since Docker and Terraform cannot run here:
//! docker-compose.yml as Debian's docker-compose reads it, every command it gives our image
//! as the binary parses and validates it (`--check-config`), terraform/ as HCL, the Makefile
//! as make dry-runs it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use clap::Parser;
use hcl::eval::{Context, Evaluate};
use pageview::config::{BucketsCommand, Cli, Command as Sub};
use pageview::dataset::Dataset;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// docker-compose.yml as `docker-compose config` resolves it, as JSON.
fn compose() -> Value {
    let config = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(repo())
        .env_remove("COMPOSE_FILE")
        .output()
        .expect("docker-compose runs (scripts/test.sh installs Debian's)");
    assert!(
        config.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&config.stderr)
    );
    // Debian's Python has PyYAML, which docker-compose itself uses.
    let mut to_json = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    to_json
        .stdin
        .take()
        .unwrap()
        .write_all(&config.stdout)
        .unwrap();
    let json = to_json.wait_with_output().unwrap();
    assert!(json.status.success());
    serde_json::from_slice(&json.stdout).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_command_compose_gives_our_image_is_one_the_binary_accepts() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let ours: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s["image"] == "pageview:latest")
        .collect();
    let names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["bucket-setup", "generator", "processor", "processor-2"]
    );
    for (name, service) in ours {
        assert_eq!(
            service["build"]["context"],
            repo().to_str().unwrap(),
            "{name}"
        );
        let mut args = strings(&service["command"]);
        args.push("--check-config".into());
        let mut command = pageview();
        command.env_clear().args(&args);
        for (key, value) in service["environment"].as_object().unwrap() {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            command.env(key, value);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{name}: pageview {}: {}",
            args.join(" "),
            stderr(&out)
        );
        assert!(stdout(&out).starts_with("configuration is valid"), "{name}");
    }
    // Two members of one group, each with its own instance id.
    let instance = |name: &str| services[name]["environment"]["KAFKA_GROUP_INSTANCE_ID"].clone();
    assert_eq!(
        (instance("processor"), instance("processor-2")),
        (Value::from("processor-1"), Value::from("processor-2"))
    );
    assert_eq!(
        strings(&services["processor"]["command"]),
        strings(&services["processor-2"]["command"])
    );
    // What the processor reads from, and where it writes.
    let processor = &services["processor"];
    assert_eq!(
        processor["environment"]["KAFKA_BOOTSTRAP_SERVERS"],
        "kafka:9092"
    );
    assert_eq!(
        processor["environment"]["LOCALSTACK_ENDPOINT"],
        "http://localstack:4566"
    );
}

#[test]
fn compose_starts_each_service_after_what_it_needs_is_healthy_or_done() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    for needed in ["kafka", "localstack", "prometheus"] {
        assert!(
            services[needed]["healthcheck"]["test"].is_array(),
            "{needed} has a health check"
        );
    }
    let waits = |service: &str, on: &str, condition: &str| {
        assert_eq!(
            services[service]["depends_on"][on]["condition"], condition,
            "{service} waits for {on}"
        );
    };
    waits("topic-setup", "kafka", "service_healthy");
    waits("bucket-setup", "localstack", "service_healthy");
    waits("generator", "topic-setup", "service_completed_successfully");
    for processor in ["processor", "processor-2"] {
        waits(processor, "topic-setup", "service_completed_successfully");
        waits(processor, "bucket-setup", "service_completed_successfully");
    }
    waits("grafana", "prometheus", "service_healthy");
    for expected in ["kafka-exporter", "prometheus", "grafana"] {
        assert!(services.contains_key(expected), "{expected}");
    }
    let topic = strings(&services["topic-setup"]["command"]).join(" ");
    assert!(
        topic.contains("--topic pageview-events --partitions 3"),
        "{topic}"
    );
}

#[test]
fn env_example_names_only_settings_compose_passes_on() {
    let example = std::fs::read_to_string(repo().join(".env.example")).unwrap();
    let compose_text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let names: Vec<&str> = example
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('=').next().unwrap())
        .collect();
    for spec_name in [
        "KAFKA_TOPIC",
        "KAFKA_CONSUMER_GROUP",
        "RAW_EVENTS_BUCKET",
        "AGGREGATED_BUCKET",
        "DLQ_BUCKET",
        "WINDOW_SIZE_SECONDS",
        "CHECKPOINT_INTERVAL_MS",
        "EVENT_RATE",
        "AWS_REGION",
        "LOCALSTACK_ENDPOINT",
    ] {
        assert!(names.contains(&spec_name), "{spec_name} in .env.example");
    }
    for name in names {
        assert!(
            compose_text.contains(&format!("${{{name}:-")),
            "docker-compose.yml uses {name}"
        );
    }
}

#[test]
fn the_image_is_built_in_two_stages_and_runs_as_a_user() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[1].contains("slim"), "{froms:?}");
    // The shipped build, with the profile made for it (Cargo.toml).
    assert!(dockerfile.contains("cargo build --profile dist --locked"));
    assert!(dockerfile.contains("cp target/dist/pageview"));
    // Cargo refuses a manifest whose declared targets are missing, benchmarks included.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    if manifest.contains("[[bench]]") {
        assert!(
            dockerfile.contains("COPY benches ./benches"),
            "{dockerfile}"
        );
    }
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .unwrap();
    assert!(!user.contains("root"), "{user}");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["pageview"]"#));
}

/// Every `.tf` file of terraform/ as one HCL body.
fn terraform() -> hcl::Body {
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(repo().join("terraform")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tf") {
            let text = std::fs::read_to_string(&path).unwrap();
            let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            blocks.extend(body.into_blocks());
        }
    }
    hcl::Body::builder().add_blocks(blocks).build()
}

fn block<'a>(body: &'a hcl::Body, kind: &str, labels: &[&str]) -> &'a hcl::Block {
    body.blocks()
        .find(|b| {
            b.identifier() == kind
                && b.labels()
                    .iter()
                    .map(|l| l.as_str())
                    .eq(labels.iter().copied())
        })
        .unwrap_or_else(|| panic!("{kind} {labels:?}"))
}

fn attribute<'a>(body: &'a hcl::Body, key: &str) -> &'a hcl::Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .unwrap_or_else(|| panic!("attribute {key}"))
        .expr()
}

fn text(expr: &hcl::Expression) -> String {
    hcl::format::to_string(expr).unwrap()
}

#[test]
fn terraform_buckets_are_the_binarys_and_the_policy_grants_only_them() {
    let tf = terraform();
    let defaults = |environment: &str| {
        let cli = Cli::try_parse_from([
            "pageview",
            "buckets",
            "create",
            "--environment",
            environment,
        ])
        .unwrap();
        let Sub::Buckets(BucketsCommand::Create(args)) = cli.command else {
            unreachable!()
        };
        (args.buckets.resolve().unwrap(), args.dlq.dlq_retention_days)
    };
    let locals = block(&tf, "locals", &[]).body();
    for environment in ["local", "prod"] {
        let mut ctx = Context::new();
        ctx.declare_var("var", hcl::value!({ environment = (environment) }));
        let names: BTreeMap<String, String> =
            match attribute(locals, "buckets").evaluate(&ctx).unwrap() {
                hcl::Value::Object(map) => map
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
                    .collect(),
                other => panic!("{other:?}"),
            };
        let (binary, _) = defaults(environment);
        let want: BTreeMap<String, String> = Dataset::ALL
            .into_iter()
            .map(|d| (d.as_str(), binary.of(d)))
            .chain([("checkpoints", binary.checkpoints.as_str())])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(names, want, "environment {environment}");
    }
    // One bucket resource, one per name above.
    let buckets: Vec<&hcl::Block> = tf
        .blocks()
        .filter(|b| {
            b.identifier() == "resource"
                && b.labels().first().map(|l| l.as_str()) == Some("aws_s3_bucket")
        })
        .collect();
    assert_eq!(buckets.len(), 1);
    assert_eq!(
        text(attribute(buckets[0].body(), "for_each")),
        "local.buckets"
    );
    for settings in [
        "aws_s3_bucket_versioning",
        "aws_s3_bucket_server_side_encryption_configuration",
        "aws_s3_bucket_public_access_block",
        "aws_s3_bucket_lifecycle_configuration",
    ] {
        let resource = block(&tf, "resource", &[settings, "pipeline"]);
        assert_eq!(
            text(attribute(resource.body(), "for_each")),
            "aws_s3_bucket.pipeline",
            "{settings} covers every bucket"
        );
    }
    // The lifecycle is the one `buckets create` applies.
    let lifecycle = hcl::format::to_string(
        block(
            &tf,
            "resource",
            &["aws_s3_bucket_lifecycle_configuration", "pipeline"],
        )
        .body(),
    )
    .unwrap();
    let glacier = format!("days = {}", pageview::storage::buckets::ARCHIVE_AFTER_DAYS);
    assert!(
        lifecycle.contains(&glacier) && lifecycle.contains("\"GLACIER\""),
        "{lifecycle}"
    );
    let archived = format!(
        "prefix = \"{}\"",
        pageview::storage::buckets::ARCHIVED_PREFIX
    );
    assert!(
        lifecycle.contains(&archived),
        "only data files archive, never a Delta log: {lifecycle}"
    );
    assert!(
        lifecycle.contains("var.table_format == \"parquet\""),
        "dead letters expire only as Parquet folders: {lifecycle}"
    );
    let (_, retention) = defaults("local");
    let dlq_default = text(attribute(
        block(&tf, "variable", &["dlq_retention_days"]).body(),
        "default",
    ));
    assert_eq!(dlq_default, retention.to_string());

    // The policy: actions on objects and buckets, resources only the pipeline's buckets.
    let policy = block(&tf, "data", &["aws_iam_policy_document", "processor"]).body();
    let statements: Vec<&hcl::Block> = policy
        .blocks()
        .filter(|b| b.identifier() == "statement")
        .collect();
    assert_eq!(statements.len(), 2);
    for statement in statements {
        let resources = text(attribute(statement.body(), "resources"));
        // A bucket's ARN, or the objects in it (`<arn>/*`): nothing wider.
        let widened = resources.replace(".arn}/*\"", "");
        assert!(
            resources.starts_with("[for b in aws_s3_bucket.pipeline : ") && !widened.contains('*'),
            "{resources}"
        );
        let actions = text(attribute(statement.body(), "actions"));
        assert!(!actions.contains('*'), "no wildcard actions: {actions}");
    }
}

#[test]
fn every_make_target_dry_runs() {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let targets: Vec<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .collect();
    for original in [
        "infra-up",
        "infra-down",
        "docker-up",
        "docker-down",
        "generate",
        "monitor",
        "all",
        "list-s3",
        "list-s3-raw",
        "list-s3-aggregated",
        "list-s3-dlq",
        "kafka-list-topics",
        "kafka-consume-events",
        "test",
        "bench",
    ] {
        assert!(targets.contains(&original), "make {original}");
    }
    for target in targets {
        let out = Command::new("make")
            .args(["-n", target])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(out.status.success(), "make -n {target}: {}", stderr(&out));
    }
}
