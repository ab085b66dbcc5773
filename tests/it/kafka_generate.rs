//! `pageview generate --bootstrap-servers` against a real Apache Kafka broker: the topic is
//! created, every event arrives once with the bytes the file generator makes, keyed as asked.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::common::kafka::Broker;
use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Every message of `topic` (partitions 0..3) as (partition, key, value), once `want` arrived.
fn consume_all(bootstrap: &str, topic: &str, want: usize) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "pageview-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..3 {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            got.push((
                message.partition(),
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // Anything beyond `want` would be a duplicate: give it a moment to show up.
    while let Some(message) = consumer.poll(Duration::from_millis(500)) {
        let message = message.unwrap();
        got.push((
            message.partition(),
            None,
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
    got
}

/// The lines `generate --output -` makes with the same flags: what Kafka must hold.
fn generated_lines(flags: &[&str]) -> Vec<Vec<u8>> {
    let mut args = vec!["generate", "--output", "-"];
    args.extend_from_slice(flags);
    run(&args)
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn events_reach_the_topic_once_each_keyed_by_postcode() {
    let broker = Broker::start();
    let flags = [
        "--events",
        "3000",
        "--seed",
        "11",
        "--simulated-time",
        "--start-time-ms",
        "1700000000000",
        "--rate",
        "100",
        "--malformed-share",
        "0.1",
    ];
    let mut args = vec![
        "generate",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--key",
        "postcode",
    ];
    args.extend_from_slice(&flags);
    let produced = run(&args);
    assert!(produced.status.success(), "{}", stderr(&produced));
    assert!(
        stderr(&produced).contains("created topic pageview-events with 3 partitions"),
        "{}",
        stderr(&produced)
    );

    let mut want = generated_lines(&flags);
    assert_eq!(want.len(), 3000);

    let messages = consume_all(&broker.bootstrap, "pageview-events", 3000);
    let mut got: Vec<Vec<u8>> = messages.iter().map(|(_, _, v)| v.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), 3000, "each event once");
    assert!(
        got == want,
        "message values are the generator's lines, byte for byte"
    );

    let mut partitions_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for (partition, key, value) in &messages {
        *per_partition.entry(*partition).or_default() += 1;
        let key = key.clone().expect("every message has a key");
        if let Ok(event) = pageview::validate::validate(value) {
            assert_eq!(key, event.postcode.as_bytes(), "keyed by its postcode");
        }
        let first = *partitions_of_key.entry(key).or_insert(*partition);
        assert_eq!(first, *partition, "one postcode, one partition");
    }
    assert!(
        per_partition.len() > 1,
        "postcodes spread over partitions: {per_partition:?}"
    );

    // A second run finds the topic and adds to it.
    let again = run(&[
        "generate",
        "--bootstrap-servers",
        &broker.bootstrap,
        "--events",
        "100",
        "--simulated-time",
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("producing to topic pageview-events (3 partitions)"));
    assert_eq!(
        consume_all(&broker.bootstrap, "pageview-events", 3100).len(),
        3100
    );
}

#[test]
fn an_unreachable_broker_is_waited_for_saying_so() {
    let mut generate = pageview();
    generate.args([
        "generate",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--events",
        "1",
    ]);
    assert_waits_for_unreachable_kafka(generate, "127.0.0.1:1");
}

#[test]
fn the_generator_rides_out_a_broker_outage_losing_and_repeating_nothing() {
    let mut broker = Broker::start();
    let flags = [
        "--events",
        "400000",
        "--seed",
        "5",
        "--simulated-time",
        "--start-time-ms",
        "1700000000000",
    ];
    let mut args = vec!["generate", "--bootstrap-servers", broker.bootstrap.as_str()];
    args.extend_from_slice(&flags);
    let mut generator = pageview()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        generator.try_wait().unwrap().is_none(),
        "the generator is still producing when the broker goes"
    );
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let output = generator.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("produced 400000 events"),
        "{}",
        stderr(&output)
    );

    let mut want = generated_lines(&flags);
    let mut got: Vec<Vec<u8>> = consume_all(&broker.bootstrap, "pageview-events", 400_000)
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "no event lost or repeated");
    assert!(got == want);
}
