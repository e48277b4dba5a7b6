//! PostgreSQL's change feed: one `LISTEN` connection per instance, so that every instance applies
//! every committed event promptly, whoever wrote it ([`super::EventStore::watch`]).
//!
//! The `events_notify` trigger (`sql/postgres/V3__notify.sql`) sends each append's last position
//! on [`CHANNEL`] when it commits. If the listening connection is lost, the feed ticks
//! [`Change::Poll`] about once a second and reconnects; once listening again it says so, and
//! the registry reads whatever it missed. Nothing here decides anything: every item only means
//! "read the tail".

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Change, ChangeFeed};

/// The channel the trigger notifies.
pub const CHANNEL: &str = "authlog_events";
/// How often an instance that is not listening reads the tail anyway, and retries listening.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// The listening session's `application_name` starts with this, followed by the process id, so
/// operators (and tests) can tell which instance's session it is.
pub const APPLICATION_NAME: &str = "authlog-listen";

type Connecting =
    Pin<Box<dyn Future<Output = Result<Listening, tokio_postgres::Error>> + Send + 'static>>;

/// A session that has run `LISTEN`: its notifications, until the connection ends.
struct Listening {
    /// Kept: dropping the client closes the session.
    _client: tokio_postgres::Client,
    notifications: mpsc::UnboundedReceiver<i64>,
}

/// Starts the feed on the current runtime. It runs until the returned stream is dropped.
pub fn feed(mut config: tokio_postgres::Config) -> ChangeFeed {
    config.application_name(format!("{APPLICATION_NAME} {}", std::process::id()));
    let (changes, mut feed) = mpsc::unbounded_channel();
    tokio::spawn(run(config, changes));
    Box::pin(futures_util::stream::poll_fn(move |cx| feed.poll_recv(cx)))
}

async fn run(config: tokio_postgres::Config, changes: mpsc::UnboundedSender<Change>) {
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connecting: Connecting = Box::pin(listen(config.clone()));
    let mut last_error: Option<String> = None;
    loop {
        // Not listening: tick while connecting, and retry a failed connection on the next tick.
        let mut listening = loop {
            tokio::select! {
                connected = &mut connecting => match connected {
                    Ok(listening) => break listening,
                    Err(error) => {
                        let message = crate::diagnostics::error_chain(&error);
                        if last_error.as_deref() != Some(message.as_str()) {
                            tracing::warn!(error = %message, "cannot listen for appends; polling the log every second");
                        }
                        last_error = Some(message);
                        let config = config.clone();
                        connecting = Box::pin(async move {
                            tokio::time::sleep(POLL_EVERY).await;
                            listen(config).await
                        });
                    }
                },
                _ = ticker.tick() => {
                    if changes.send(Change::Poll).is_err() {
                        return;
                    }
                }
            }
        };
        if last_error.take().is_some() {
            tracing::info!("listening for appends again");
        }
        crate::metrics::METRICS.log_listening.set(1);
        if changes.send(Change::Listening).is_err() {
            return;
        }
        loop {
            tokio::select! {
                head = listening.notifications.recv() => match head {
                    Some(head) => {
                        if changes.send(Change::Appended(head)).is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                () = changes.closed() => return,
            }
        }
        crate::metrics::METRICS.log_listening.set(0);
        tracing::warn!(
            "lost the connection that listens for appends; polling the log every second"
        );
        if changes.send(Change::Lost).is_err() {
            return;
        }
        let config = config.clone();
        connecting = Box::pin(listen(config));
    }
}

/// Connects, runs `LISTEN`, and forwards the notified positions until the connection ends.
async fn listen(config: tokio_postgres::Config) -> Result<Listening, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (positions, notifications) = mpsc::unbounded_channel();
    // The connection must be polled for `LISTEN` to complete, so it is driven from the start.
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message
                && let Ok(head) = notification.payload().parse::<i64>()
                && positions.send(head).is_err()
            {
                return;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Listening {
        _client: client,
        notifications,
    })
}
