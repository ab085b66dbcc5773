//! Generator and processor through a real Apache Kafka broker's secured listeners: SASL_SSL
//! with SCRAM-SHA-512, SSL with a client certificate, and OAUTHBEARER (librdkafka's own
//! tokens, and AWS MSK IAM tokens, which only MSK accepts). Each misconfiguration (a wrong
//! password, an untrusted CA, no client certificate where the broker requires one, TLS
//! against a plaintext port and the reverse) ends the command with one line naming it,
//! instead of a silent wait; secrets show nowhere.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::kafka::{Broker, SCRAM_PASSWORD, SCRAM_USER, Secured};
use crate::common::*;

/// The variables of a SCRAM client of the secured broker, its password from a file.
fn scram_env(secured: &Secured, password_file: &Path) -> Vec<(&'static str, String)> {
    std::fs::write(password_file, format!("{SCRAM_PASSWORD}\n")).unwrap();
    vec![
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".into()),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".into()),
        ("KAFKA_SASL_USERNAME", SCRAM_USER.into()),
        (
            "KAFKA_SASL_PASSWORD_FILE",
            password_file.display().to_string(),
        ),
        ("KAFKA_SSL_CA_LOCATION", secured.ca.display().to_string()),
    ]
}

/// The variables of a client that authenticates by its TLS certificate.
fn mtls_env(secured: &Secured) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_SECURITY_PROTOCOL", "SSL".into()),
        ("KAFKA_SSL_CA_LOCATION", secured.ca.display().to_string()),
        (
            "KAFKA_SSL_CERTIFICATE_LOCATION",
            secured.client_certificate.display().to_string(),
        ),
        (
            "KAFKA_SSL_KEY_LOCATION",
            secured.client_key.display().to_string(),
        ),
    ]
}

/// Runs `pageview ARGS` with `env`; a command still running after a minute is killed and
/// fails the test, so a hang shows as one.
fn pageview_with(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = pageview();
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "pageview {args:?} still running after 60 s: {}",
                stderr(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Generates 2,000 events to `servers` and processes them back with `--stop-at-end`; every
/// one must arrive, and no secret may show in anything printed.
fn round_trip(servers: &str, env: &[(&str, String)], secrets: &[&str]) {
    let storage = tempfile::tempdir().unwrap();
    let generated = pageview_with(
        &[
            "generate",
            "--bootstrap-servers",
            servers,
            "--events",
            "2000",
            "--simulated-time",
            "--seed",
            "4",
        ],
        env,
    );
    assert!(generated.status.success(), "{}", stderr(&generated));
    let processed = pageview_with(
        &[
            "process",
            "--bootstrap-servers",
            servers,
            "--stop-at-end",
            "--storage",
            storage.path().to_str().unwrap(),
        ],
        env,
    );
    assert!(processed.status.success(), "{}", stderr(&processed));
    assert_eq!(rows(storage.path(), RAW), 2000, "{}", stderr(&processed));
    let said = format!(
        "{}{}{}{}",
        stdout(&generated),
        stderr(&generated),
        stdout(&processed),
        stderr(&processed)
    );
    for secret in secrets {
        assert!(!said.contains(secret), "{secret} shown in: {said}");
    }
}

/// The command fails with one error line containing `names`, after at most a line saying
/// where it connects.
fn assert_refused(output: &Output, names: &str) {
    assert!(!output.status.success());
    let err = stderr(output);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pageview: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(names), "{names} not in {err}");
    assert!(
        !err.contains("still waiting"),
        "named at once, not waited on: {err}"
    );
    assert!(err.lines().count() <= 2, "{err}");
}

#[test]
fn generator_and_processor_work_through_sasl_ssl_with_scram() {
    let (_broker, secured) = Broker::start_secured();
    let dir = tempfile::tempdir().unwrap();
    let env = scram_env(&secured, &dir.path().join("password"));
    round_trip(&secured.sasl_ssl, &env, &[SCRAM_PASSWORD]);
}

#[test]
fn generator_and_processor_work_through_ssl_with_a_client_certificate() {
    let (_broker, secured) = Broker::start_secured();
    round_trip(&secured.ssl, &mtls_env(&secured), &[]);
}

#[test]
fn misconfigured_security_is_named_at_once() {
    let (broker, secured) = Broker::start_secured();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("out");
    let storage = storage.to_str().unwrap();
    let process = |servers: &str, env: &[(&str, String)]| {
        pageview_with(
            &[
                "process",
                "--bootstrap-servers",
                servers,
                "--storage",
                storage,
            ],
            env,
        )
    };
    let generate = |servers: &str, env: &[(&str, String)]| {
        pageview_with(
            &["generate", "--bootstrap-servers", servers, "--events", "1"],
            env,
        )
    };

    let mut wrong_password = scram_env(&secured, &dir.path().join("password"));
    wrong_password.retain(|(k, _)| *k != "KAFKA_SASL_PASSWORD_FILE");
    wrong_password.push(("KAFKA_SASL_PASSWORD", "not-the-password".into()));
    for output in [
        process(&secured.sasl_ssl, &wrong_password),
        generate(&secured.sasl_ssl, &wrong_password),
    ] {
        assert_refused(&output, "authentication failed");
        assert!(!stderr(&output).contains("not-the-password"));
    }

    let mut unknown_ca = mtls_env(&secured);
    unknown_ca[1].1 = secured.other_ca.display().to_string();
    assert_refused(&process(&secured.ssl, &unknown_ca), "not trusted");
    assert_refused(&generate(&secured.ssl, &unknown_ca), "not trusted");

    // The listener requires a client certificate and none is given: the broker's refusal
    // comes after the handshake, as a failed read.
    let mut no_certificate = mtls_env(&secured);
    no_certificate.truncate(2);
    let certificate_settings = "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION";
    assert_refused(
        &process(&secured.ssl, &no_certificate),
        certificate_settings,
    );
    assert_refused(
        &generate(&secured.ssl, &no_certificate),
        certificate_settings,
    );

    // The system's CAs do not know the test's CA either.
    let no_ca = vec![("KAFKA_SECURITY_PROTOCOL", "SSL".to_string())];
    assert_refused(&generate(&secured.ssl, &no_ca), "KAFKA_SSL_CA_LOCATION");

    // A plaintext client on the TLS port, and a TLS client on the plaintext one.
    assert_refused(&process(&secured.ssl, &[]), "KAFKA_SECURITY_PROTOCOL");
    assert_refused(&generate(&secured.sasl_ssl, &[]), "KAFKA_SECURITY_PROTOCOL");
    let tls_on_plaintext = mtls_env(&secured);
    assert_refused(
        &process(&broker.bootstrap, &tls_on_plaintext),
        "does not speak TLS",
    );
    assert_refused(
        &generate(&broker.bootstrap, &tls_on_plaintext),
        "does not speak TLS",
    );

    assert!(parquet_files(dir.path()).is_empty(), "nothing is written");
}

#[test]
fn secrets_show_neither_in_help_nor_in_check_config() {
    let env = [
        ("KAFKA_SASL_MECHANISM", "PLAIN".to_string()),
        ("KAFKA_SASL_USERNAME", "api-key".to_string()),
        ("KAFKA_SASL_PASSWORD", "s3cr3t-value".to_string()),
        (
            "KAFKA_OPTIONS",
            "sasl.oauthbearer.config=principal=0ther-s3cr3t".to_string(),
        ),
    ];
    let help = pageview_with(&["process", "--help"], &env);
    let check = pageview_with(
        &[
            "process",
            "--bootstrap-servers",
            "broker:9096",
            "--storage",
            "out",
            "--check-config",
        ],
        &env,
    );
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("(SASL_SSL, PLAIN as api-key)"),
        "{}",
        stdout(&check)
    );
    for output in [&help, &check] {
        let said = format!("{}{}", stdout(output), stderr(output));
        assert!(!said.contains("s3cr3t"), "{said}");
    }
    assert!(stdout(&help).contains("KAFKA_SASL_PASSWORD"));

    // Empty is unset, as a compose file's `NAME: ${NAME:-}` passes it.
    let empty: Vec<(&str, String)> = [
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SASL_PASSWORD_FILE",
        "KAFKA_SSL_CA_LOCATION",
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "KAFKA_SSL_KEY_LOCATION",
        "KAFKA_SSL_KEY_PASSWORD",
        "KAFKA_OPTIONS",
    ]
    .iter()
    .map(|name| (*name, String::new()))
    .collect();
    let check = pageview_with(
        &[
            "generate",
            "--bootstrap-servers",
            "broker:9092",
            "--check-config",
        ],
        &empty,
    );
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains("(PLAINTEXT)"), "{}", stdout(&check));
}

#[test]
fn bad_security_settings_name_the_setting_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("out");
    let storage = storage.to_str().unwrap();
    let process = |env: &[(&str, String)]| {
        pageview_with(
            &[
                "process",
                "--bootstrap-servers",
                "127.0.0.1:1",
                "--storage",
                storage,
            ],
            env,
        )
    };
    for (env, names) in [
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")],
            "KAFKA_SASL_MECHANISM",
        ),
        (
            vec![("KAFKA_SECURITY_PROTOCOL", "TLS")],
            "KAFKA_SECURITY_PROTOCOL",
        ),
        (
            vec![
                ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("KAFKA_SASL_USERNAME", "u"),
            ],
            "KAFKA_SASL_PASSWORD",
        ),
        (
            vec![
                ("KAFKA_SASL_MECHANISM", "PLAIN"),
                ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            ],
            "KAFKA_SASL_MECHANISM",
        ),
        (
            vec![
                ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ],
            "KAFKA_SSL_CA_LOCATION",
        ),
        (
            vec![("KAFKA_OPTIONS", "enable.auto.commit=true")],
            "enable.auto.commit",
        ),
        (
            vec![("KAFKA_OPTIONS", "no.such.property=1")],
            "no.such.property",
        ),
        (vec![("KAFKA_OPTIONS", "linger.ms")], "KEY=VALUE"),
        (vec![("KAFKA_OPTIONS", "linger.ms=s3cr3t")], "linger.ms"),
        (
            vec![("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM"), ("AWS_REGION", "")],
            "AWS_REGION",
        ),
    ] {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let output = process(&env);
        assert_one_line_error(&output, names);
        let err = stderr(&output);
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            !err.contains("Kafka at"),
            "refused before connecting to anything: {err}"
        );
    }
    // A certificate file librdkafka cannot load is found when the client is made.
    let not_pem = vec![
        ("KAFKA_SECURITY_PROTOCOL", "SSL".to_string()),
        (
            "KAFKA_SSL_CERTIFICATE_LOCATION",
            "/etc/hostname".to_string(),
        ),
        ("KAFKA_SSL_KEY_LOCATION", "/etc/hostname".to_string()),
    ];
    assert_refused(&process(&not_pem), "(check KAFKA_SSL_CERTIFICATE_LOCATION)");
}

#[test]
fn oauthbearer_tokens_reach_the_broker() {
    let (_broker, secured) = Broker::start_secured();
    // librdkafka's own unsecured JWT, which the broker's default validator accepts.
    let jwt = vec![
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".to_string()),
        ("KAFKA_SASL_MECHANISM", "OAUTHBEARER".to_string()),
        (
            "KAFKA_OPTIONS",
            "enable.sasl.oauthbearer.unsecure.jwt=true;sasl.oauthbearer.config=principal=pageview"
                .to_string(),
        ),
    ];
    round_trip(&secured.oauth, &jwt, &[]);

    // An AWS MSK IAM token is signed and sent; a broker that is not MSK cannot check its
    // signature and refuses it, which is named as an authentication failure.
    let msk_iam = vec![
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".to_string()),
        ("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM".to_string()),
        ("AWS_REGION", "eu-west-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "not-a-real-secret".to_string()),
    ];
    let output = pageview_with(
        &[
            "generate",
            "--bootstrap-servers",
            &secured.oauth,
            "--events",
            "1",
        ],
        &msk_iam,
    );
    assert_refused(&output, "authentication failed");
    assert!(!stderr(&output).contains("not-a-real-secret"));
}
