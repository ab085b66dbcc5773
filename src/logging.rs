//! Log lines on stderr, one per significant event. `text` (the default) reads as it always
//! has, `pageview: <what happened>`; `json` is one object per line for log pipelines.
//! `LOG_LEVEL` filters: a bare level applies to this program (libraries only warn, delta-rs
//! only errs: it warns at every commit it retries onto a newer version, which the compactor
//! beside a processor makes routine), anything else is a `tracing` filter directive.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `LOG_LEVEL` is neither a level nor a filter.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid LOG_LEVEL: {level:?} is not a level (error, warn, info, debug, trace) or filter: {source}"
)]
pub struct LogLevelError {
    level: String,
    source: tracing_subscriber::filter::ParseError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `pageview: <message> <field>=<value>…`.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "pageview: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The filter `LOG_LEVEL` asks for.
fn filter(level: &str) -> Result<EnvFilter, LogLevelError> {
    let directives = match level {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => {
            format!("warn,deltalake_core=error,pageview={level}")
        }
        other => other.to_string(),
    };
    EnvFilter::try_new(&directives).map_err(|source| LogLevelError {
        level: level.to_string(),
        source,
    })
}

/// Sends this process's log events to stderr in `format`, those `level` lets through.
pub fn init(format: LogFormat, level: &str) -> Result<(), LogLevelError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.event_format(Plain).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_for_this_program_and_nonsense_is_named() {
        assert_eq!(
            filter("debug").unwrap().to_string(),
            EnvFilter::try_new("warn,deltalake_core=error,pageview=debug")
                .unwrap()
                .to_string()
        );
        assert!(filter("pageview::storage=trace").is_ok());
        let err = filter("[{").unwrap_err().to_string();
        assert!(err.contains("LOG_LEVEL"), "{err}");
    }
}
