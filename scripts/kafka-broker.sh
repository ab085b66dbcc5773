#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft) on 127.0.0.1:${1:-9092}, in the foreground, with
# its data in a temporary folder removed on exit: for trying `run --kafka` and for
# `bench --kafka` without Docker. Needs Java 17+ and Maven (for the first fetch).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/kafka-jars.sh
port="${1:-9092}"
controller=$((port + 1))
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
cat >"$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data/logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
cluster="$(java -cp "$kafka_libs/*" kafka.tools.StorageTool random-uuid)"
java -cp "$kafka_libs/*" kafka.tools.StorageTool format -t "$cluster" \
    -c "$data/server.properties" >/dev/null
echo "== Kafka broker on 127.0.0.1:$port (Ctrl-C stops it)"
java -Xmx1g -cp "$kafka_libs/*" kafka.Kafka "$data/server.properties"
