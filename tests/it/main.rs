//! The integration tests, one module per area, in one binary: linked once, and run side by
//! side by one test harness, so the tests that wait (for a broker, LocalStack, a session
//! timeout) overlap across areas. Each test starts its own services on free ports and
//! changes nothing its process shares (no environment variables, no working directory).

mod common;

mod architecture;
mod cli;
mod crash;
mod deploy;
mod inspect;
mod kafka_generate;
mod kafka_process;
mod kafka_secured;
mod metrics;
mod process_e2e;
mod readers;
mod s3;
mod storage;
