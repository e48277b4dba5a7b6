//! Builders for events in unit tests, so each test states only what it is about.

use chrono::Utc;

use super::{Event, EventMetadata, RecordedEvent, UserRegistered};
use crate::domain::{Email, PasswordHash, UserId};

/// `event` as the log would hold it at `position`, recorded now, with no metadata.
pub fn recorded(position: i64, stream_version: i32, event: Event) -> RecordedEvent {
    RecordedEvent {
        position,
        stream_version,
        event,
        metadata: EventMetadata::default(),
        recorded_at: Utc::now(),
    }
}

/// A registration of `email` (which must be valid) with a placeholder hash.
pub fn registered(user_id: UserId, email: &str) -> Event {
    Event::UserRegistered(UserRegistered {
        user_id,
        email: Email::parse(email).expect("a valid email"),
        password_hash: PasswordHash::new("$2b$04$x".into()),
        imported: None,
    })
}
