# The original design's targets, mapped to docker compose and the pageview binary.
# `make help` lists them.

COMPOSE ?= docker compose
CARGO ?= cargo
PAGEVIEW ?= $(CARGO) run --release --quiet --
ENVIRONMENT ?= local
KAFKA_TOPIC ?= pageview-events
LOCALSTACK ?= http://localhost:4566
RAW_EVENTS_BUCKET ?= pageview-pipeline-$(ENVIRONMENT)-raw-events
AGGREGATED_BUCKET ?= pageview-pipeline-$(ENVIRONMENT)-aggregated
DLQ_BUCKET ?= pageview-pipeline-$(ENVIRONMENT)-dlq
GRAFANA ?= http://localhost:3000
TERRAFORM ?= terraform -chdir=terraform
AWS_LOCAL = AWS_ENDPOINT_URL=$(LOCALSTACK) AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

.PHONY: help run build test all lint format bench docker-build docker-up docker-down \
	infra-up infra-down buckets generate monitor list-s3 list-s3-raw list-s3-aggregated \
	list-s3-dlq kafka-list-topics kafka-consume-events

help: ## This list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

run: ## The embedded pipeline on local folders: no Kafka, no S3, no Docker
	$(PAGEVIEW) run

build: ## The release binary, target/release/pageview
	$(CARGO) build --release --locked

test: ## Every check and test (installs what the tests need under ~/.cache/pageview)
	bash scripts/test.sh

all: test ## The original's quality gate: format, lint and tests

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --all-targets --locked -- -D warnings

format: ## Format the code
	$(CARGO) fmt

bench: ## Throughput against the parse-only limit (docs/PERFORMANCE.md)
	$(PAGEVIEW) bench

docker-build: ## Build the pageview image
	$(COMPOSE) build

docker-up: ## Start every container (Kafka, LocalStack, generator, two processors, monitoring)
	$(COMPOSE) up -d --build

docker-down: ## Stop every container
	$(COMPOSE) down

infra-up: ## Kafka and LocalStack, the buckets by Terraform, then everything else
	$(COMPOSE) up -d --wait kafka localstack
	$(TERRAFORM) init -input=false
	$(AWS_LOCAL) $(TERRAFORM) apply -input=false -auto-approve -var environment=$(ENVIRONMENT) -var s3_endpoint=$(LOCALSTACK)
	$(COMPOSE) up -d --build

infra-down: ## Destroy the Terraform resources, then stop every container
	$(AWS_LOCAL) $(TERRAFORM) destroy -input=false -auto-approve -var environment=$(ENVIRONMENT) -var s3_endpoint=$(LOCALSTACK)
	$(COMPOSE) down

buckets: ## The buckets and their rules in LocalStack, without Terraform
	$(AWS_LOCAL) $(PAGEVIEW) buckets create --environment $(ENVIRONMENT)

generate: ## Run the data generator against the compose Kafka (EVENT_RATE=… to change the rate)
	$(PAGEVIEW) generate --bootstrap-servers localhost:29092 --topic $(KAFKA_TOPIC)

monitor: ## Open Grafana
	@echo "Grafana: $(GRAFANA)"
	-xdg-open $(GRAFANA) 2>/dev/null || open $(GRAFANA) 2>/dev/null || true

list-s3: ## List the buckets in LocalStack
	$(COMPOSE) exec localstack awslocal s3 ls

list-s3-raw: ## List the raw event files
	$(COMPOSE) exec localstack awslocal s3 ls --recursive s3://$(RAW_EVENTS_BUCKET)

list-s3-aggregated: ## List the aggregated window files
	$(COMPOSE) exec localstack awslocal s3 ls --recursive s3://$(AGGREGATED_BUCKET)

list-s3-dlq: ## List the dead-letter files
	$(COMPOSE) exec localstack awslocal s3 ls --recursive s3://$(DLQ_BUCKET)

kafka-list-topics: ## List the Kafka topics
	$(COMPOSE) exec kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 --list

kafka-consume-events: ## Show the first 10 events of the topic
	$(COMPOSE) exec kafka /opt/kafka/bin/kafka-console-consumer.sh --bootstrap-server localhost:9092 --topic $(KAFKA_TOPIC) --from-beginning --max-messages 10
