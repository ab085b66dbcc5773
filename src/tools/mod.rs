//! Around the pipeline, not part of it: what a run shows of itself (progress, the status
//! page and its endpoints, the summary it prints), reading the lake back (`inspect`), and
//! the benchmarks.

pub mod bench;
pub mod inspect;
pub mod observe;
pub mod report;
pub mod serve;
pub mod status;
