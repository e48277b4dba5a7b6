//! Log set-up: lines on stderr, readable text or one JSON object per line, filtered by
//! `RUST_LOG` (default `info`).
//!
//! Every line carries its UTC time; lines logged while serving a request carry the request's
//! span (`request{id, method, path, client}`), which JSON puts under `"span"`.
//!
//! Whatever `RUST_LOG` says, the database driver logs at `info` at most: at `debug`
//! `tokio_postgres` logs every statement's parameters, which are events' payloads (emails,
//! password hashes).

use std::io::IsTerminal as _;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// An unparsable `RUST_LOG` is an error naming it, rather than a silent fallback.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = filter(std::env::var("RUST_LOG").ok())?.and(filter_fn(not_driver_detail));
    let layer = match format {
        LogFormat::Text => {
            // Colours only on a terminal (and never with NO_COLOR set).
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .boxed()
        }
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(|error| format!("cannot install the logger: {error}"))
}

/// Everything but the PostgreSQL driver's `debug` and `trace` lines, which carry statement
/// parameters.
pub fn not_driver_detail(metadata: &Metadata<'_>) -> bool {
    !(metadata.target().starts_with("tokio_postgres") && *metadata.level() > Level::INFO)
}

/// The filter for a `RUST_LOG` value: `info` when unset or empty, an error naming it when invalid.
fn filter(directives: Option<String>) -> Result<EnvFilter, String> {
    match directives {
        Some(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|error| format!("RUST_LOG={directives:?} is not a valid filter: {error}")),
        _ => Ok(EnvFilter::new("info")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_driver_never_logs_below_info() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static SITE: Site = Site;
        let meta = |target: &'static str, level| {
            Metadata::new(
                "event",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            )
        };
        assert!(!not_driver_detail(&meta(
            "tokio_postgres::query",
            Level::DEBUG
        )));
        assert!(!not_driver_detail(&meta(
            "tokio_postgres::prepare",
            Level::TRACE
        )));
        assert!(not_driver_detail(&meta(
            "tokio_postgres::connection",
            Level::INFO
        )));
        assert!(not_driver_detail(&meta("authlog::http", Level::DEBUG)));
    }

    #[test]
    fn rust_log_defaults_to_info_and_a_bad_value_names_it() {
        assert_eq!(filter(None).expect("default").to_string(), "info");
        assert_eq!(
            filter(Some(String::new())).expect("default").to_string(),
            "info"
        );
        assert!(filter(Some("authlog=debug,info".to_owned())).is_ok());
        let error = filter(Some("authlog=loud".to_owned())).expect_err("invalid");
        assert!(
            error.starts_with("RUST_LOG=\"authlog=loud\" is not a valid filter"),
            "{error}"
        );
    }
}
