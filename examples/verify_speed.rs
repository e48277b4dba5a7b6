//! How long `authlog verify` takes over a large log: writes N events (half registrations, half
//! logins) to a fresh embedded store in batches, then recomputes the chain and prints the time.
//!
//! `cargo run --release --example verify_speed -- 1000000`

#![forbid(unsafe_code)]

use std::time::Instant;

use authlog::domain::{Email, PasswordHash, UserId};
use authlog::events::{
    Event, EventMetadata, EventStore, LoginSucceeded, NewEvent, SqliteEventStore, SqliteSettings,
    UserRegistered, chain,
};

const BATCH: usize = 10_000;

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let store = SqliteEventStore::open(&SqliteSettings::in_dir(dir.path()))
        .await?
        .with_personal_data(authlog::events::personal::Shredder::ephemeral());
    let hash: PasswordHash = serde_json::from_value(serde_json::json!(
        "$2b$12$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq"
    ))?;
    let metadata = EventMetadata::new(Some([127, 0, 0, 1].into()), Some("verify_speed"));
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH && written + batch.len() < total {
            let user = UserId::new();
            let n = written + batch.len();
            batch.push(NewEvent {
                stream_version: 1,
                event: Event::UserRegistered(UserRegistered {
                    user_id: user,
                    email: Email::parse(&format!("user{n}@example.com"))?,
                    password_hash: hash.clone(),
                    imported: None,
                }),
                metadata: metadata.clone(),
            });
            if batch.len() < BATCH && written + batch.len() < total {
                batch.push(NewEvent {
                    stream_version: 2,
                    event: Event::LoginSucceeded(LoginSucceeded { user_id: user }),
                    metadata: metadata.clone(),
                });
            }
        }
        written += batch.len();
        store.append(batch).await?;
    }
    let appended = started.elapsed();
    let started = Instant::now();
    let verifier = chain::verify(&store).await?;
    let verified = started.elapsed();
    assert_eq!(verifier.broken, None);
    println!(
        "events: {} (appended in {:.1} s), verify: {:.2} s, {:.0} events/s",
        verifier.count,
        appended.as_secs_f64(),
        verified.as_secs_f64(),
        verifier.count as f64 / verified.as_secs_f64()
    );
    Ok(())
}
