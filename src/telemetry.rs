//! Log set-up: lines on stderr, readable text or one JSON object per line, filtered by
//! `RUST_LOG` (default `info`).
//!
//! Every line carries its UTC time; lines logged while serving a request carry the request's
//! span (`request{id, method, path, client}`), which JSON puts under `"span"`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

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
    let filter = filter(std::env::var("RUST_LOG").ok())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            // Colours only on a terminal (and never with NO_COLOR set).
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .init(),
    }
    Ok(())
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
