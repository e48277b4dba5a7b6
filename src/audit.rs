//! The auditors' commands: list the log (`events`), rebuild the state as of a moment (`replay`),
//! and prove the log was not changed (`verify`). They read the log the service writes through the
//! same pager, fold it with the same [`State::apply`], and write plain text (or JSON lines) to
//! any writer.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::ops::ControlFlow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::domain::{Email, UserId};
use crate::events::chain::{self, Verifier};
use crate::events::signed::{Checkpoint, Guard, RowSignatures, Trust, Why};
use crate::events::{Event, EventStore, RecordedEvent, StoreError, events_after, linked_after};
use crate::state::State;
use crate::throttle::{Subject, ThrottlePolicy};

/// Why an audit command failed (as opposed to finding a broken chain, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

/// A chain head recorded earlier, `HASH@POSITION`, that `verify --expect` must find again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedHead {
    pub hash: String,
    pub position: i64,
}

impl std::str::FromStr for ExpectedHead {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{raw:?} is not HASH@POSITION: 64 hex digits, '@', a position, as `verify` \
                 printed them (e.g. {}@1200)",
                "3f2a".repeat(16)
            )
        };
        let (hash, position) = raw.rsplit_once('@').ok_or_else(usage)?;
        let position = position.parse().map_err(|_| usage())?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || position < 1 {
            return Err(usage());
        }
        Ok(Self {
            hash: hash.to_ascii_lowercase(),
            position,
        })
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Intact,
    /// The first position where the chain breaks, and why.
    Broken(i64, String),
    /// The chain is intact but does not contain the expected head: the log was rewritten or
    /// its tail removed since that head was recorded.
    ExpectedHeadMissing(String),
    /// The chain is intact, but a row is not covered by a valid log signature: someone without
    /// the log-signing key wrote it.
    Unsigned(i64, String),
    /// An anchored checkpoint is not in the log as it was: the tail was cut, or the log was
    /// rewritten (even with a recomputed chain), or the checkpoint itself is not genuine.
    CheckpointMissing(String),
}

/// What `verify` checks beyond the chain: whose signatures to accept, and the checkpoints the
/// log must still contain.
#[derive(Debug, Default)]
pub struct Anchors {
    /// The log-signing keys (from `--public-key`, or the master key); `None`: signatures are
    /// not checked.
    pub trust: Option<Trust>,
    pub checkpoints: Vec<Checkpoint>,
}

/// `authlog verify [--expect HASH@POSITION]`: recomputes the chain and reports. The caller exits
/// 0 for `Intact`, 1 otherwise.
pub async fn verify(
    store: &dyn EventStore,
    expected: Option<&ExpectedHead>,
    out: &mut impl Write,
) -> Result<VerifyOutcome, AuditError> {
    verify_anchored(store, expected, Anchors::default(), out).await
}

/// [`verify`], also checking every row is covered by a signature of the trusted keys, and that
/// the log holds every checkpoint unchanged.
pub async fn verify_anchored(
    store: &dyn EventStore,
    expected: Option<&ExpectedHead>,
    anchors: Anchors,
    out: &mut impl Write,
) -> Result<VerifyOutcome, AuditError> {
    let started = std::time::Instant::now();
    let wanted: std::collections::HashSet<i64> =
        anchors.checkpoints.iter().map(|c| c.position).collect();
    let mut found: BTreeMap<i64, String> = BTreeMap::new();
    let mut verifier = Verifier::default();
    let mut signatures = anchors.trust.map(RowSignatures::new);
    let mut unsigned = None;
    let walked = chain::hashed_after(store, 0)
        .for_each(|hashed| {
            if !verifier.check_hashed(&hashed) {
                return ControlFlow::Break(());
            }
            let row = hashed.row;
            if let Some(signatures) = signatures.as_mut()
                && let Err(untrusted) = signatures.check(&row)
            {
                unsigned = Some(untrusted);
                return ControlFlow::Break(());
            }
            if wanted.contains(&row.columns.position)
                && let Some(hash) = &row.hash
            {
                found.insert(row.columns.position, hash.clone());
            }
            ControlFlow::Continue(())
        })
        .await;
    match walked {
        Ok(_) => {}
        Err(StoreError::Corrupt { position, .. }) => {
            verifier.broken = Some((position, chain::Break::Unreadable));
        }
        Err(error) => return Err(error.into()),
    }
    let elapsed = started.elapsed().as_secs_f64();
    let Verifier {
        count,
        head_position,
        head_hash,
        broken,
    } = &verifier;
    writeln!(out, "events: {count}")?;
    writeln!(out, "head position: {head_position}")?;
    writeln!(out, "head hash: {head_hash}")?;
    if let Some((position, why)) = broken {
        writeln!(out, "BROKEN at position {position}: {why}")?;
        return Ok(VerifyOutcome::Broken(*position, why.to_string()));
    }
    let Some(signatures) = signatures else {
        writeln!(
            out,
            "signatures: not checked (give --public-key, or the master key)"
        )?;
        if !anchors.checkpoints.is_empty() {
            let message = "checkpoints need the log's public key to be checked".to_owned();
            writeln!(out, "CHECKPOINTS NOT CHECKED: {message}")?;
            return Ok(VerifyOutcome::CheckpointMissing(message));
        }
        return finish_expected(store, expected, out).await;
    };
    let unsigned = unsigned.or_else(|| signatures.finish().err());
    if let Some(untrusted) = unsigned {
        let why = if signatures.checked() == 0 && untrusted.why == Why::Unsigned {
            "the log carries no signature (written before signing, or its signatures were \
             removed)"
                .to_owned()
        } else {
            untrusted.why.to_string()
        };
        writeln!(out, "UNSIGNED at position {}: {why}", untrusted.position)?;
        return Ok(VerifyOutcome::Unsigned(untrusted.position, why));
    }
    writeln!(
        out,
        "signatures: {} checked, all valid ({:.0}/s); log-signing key generation {}",
        signatures.checked(),
        signatures.checked() as f64 / elapsed.max(1e-9),
        signatures.generation()
    )?;
    for checkpoint in &anchors.checkpoints {
        let at = checkpoint.position;
        let problem = if !signatures.trust().verifies_checkpoint(checkpoint) {
            Some(format!(
                "the checkpoint of position {at} is not signed by a trusted log key"
            ))
        } else if at > *head_position {
            Some(format!(
                "the log ends at position {head_position}, before the checkpoint of position \
                 {at}: its tail was removed"
            ))
        } else {
            match found.get(&at) {
                Some(hash) if *hash == checkpoint.hash => None,
                Some(hash) => Some(format!(
                    "position {at} has hash {hash}, not the checkpoint's {}: the log was \
                     rewritten",
                    checkpoint.hash
                )),
                None => Some(format!("the log has no event at position {at} any more")),
            }
        };
        if let Some(message) = problem {
            writeln!(out, "CHECKPOINT MISSING: {message}")?;
            return Ok(VerifyOutcome::CheckpointMissing(message));
        }
    }
    if !anchors.checkpoints.is_empty() {
        writeln!(
            out,
            "checkpoints: {} anchored, all present and unchanged",
            anchors.checkpoints.len()
        )?;
    }
    finish_expected(store, expected, out).await
}

/// The end of `verify`: the expected head, if one was given, then the verdict.
async fn finish_expected(
    store: &dyn EventStore,
    expected: Option<&ExpectedHead>,
    out: &mut impl Write,
) -> Result<VerifyOutcome, AuditError> {
    if let Some(ExpectedHead { hash, position }) = expected {
        let (hash, position) = (hash.clone(), *position);
        let found = hash_at(store, position).await?;
        if found.as_deref() != Some(hash.as_str()) {
            let message = match found {
                None => format!("the log has no event at position {position} any more"),
                Some(other) => format!("position {position} has hash {other}, not {hash}"),
            };
            writeln!(out, "EXPECTED HEAD MISSING: {message}")?;
            return Ok(VerifyOutcome::ExpectedHeadMissing(message));
        }
        writeln!(out, "expected head {hash}@{position}: present")?;
    }
    writeln!(out, "chain intact")?;
    Ok(VerifyOutcome::Intact)
}

async fn hash_at(store: &dyn EventStore, position: i64) -> Result<Option<String>, StoreError> {
    let rows = store.read_rows_after(position - 1, 1).await?;
    Ok(rows
        .into_iter()
        .find(|row| row.columns.position == position)
        .and_then(|row| row.hash))
}

/// Which events `events` lists.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// An email or a user id.
    pub user: Option<String>,
    pub event_type: Option<String>,
}

/// Who `--user` names: an id at once, or an email resolved when its registration goes by.
enum UserSelector {
    Id(UserId),
    Email(Email, Option<UserId>),
    /// Not an id and not a valid email: matches nothing.
    Nobody,
}

impl UserSelector {
    fn parse(raw: &str) -> Self {
        match raw.parse::<uuid::Uuid>() {
            Ok(id) => Self::Id(UserId::from(id)),
            Err(_) => match Email::parse(raw) {
                Ok(email) => Self::Email(email, None),
                Err(_) => Self::Nobody,
            },
        }
    }

    fn matches(&mut self, event: &RecordedEvent) -> bool {
        match self {
            Self::Id(id) => event.event.user_id() == Some(*id),
            Self::Email(email, id) => {
                if let (None, Event::UserRegistered(registered)) = (&id, &event.event)
                    && registered.email == *email
                {
                    *id = Some(registered.user_id);
                }
                id.is_some() && *id == event.event.user_id()
            }
            Self::Nobody => false,
        }
    }
}

/// `authlog events`: streams the log, page by page, as a table or JSON lines. Password hashes
/// are shown as a fingerprint (`sha256:` and 12 hex digits of the hash's SHA-256), never whole.
pub async fn events(
    store: &dyn EventStore,
    filter: &EventFilter,
    jsonl: bool,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let mut user = filter.user.as_deref().map(UserSelector::parse);
    let after = filter.from.map_or(0, |from| from - 1);
    let mut listed = 0;
    if !jsonl {
        writeln!(
            out,
            "{:>8}  {:<27}  {:<16}  {:>3}  {:<36}  details",
            "position", "recorded_at", "type", "ver", "user"
        )?;
    }
    let mut failed = None;
    events_after(store, after)
        .for_each(|event| {
            if filter.to.is_some_and(|to| event.position > to) {
                return ControlFlow::Break(());
            }
            let selected = user.as_mut().is_none_or(|user| user.matches(&event))
                && filter.since.is_none_or(|since| event.recorded_at >= since)
                && filter.until.is_none_or(|until| event.recorded_at <= until)
                && filter
                    .event_type
                    .as_deref()
                    .is_none_or(|t| t == event.event.event_type());
            if !selected {
                return ControlFlow::Continue(());
            }
            listed += 1;
            let written = if jsonl {
                writeln!(out, "{}", event_json(&event))
            } else {
                writeln!(
                    out,
                    "{:>8}  {:<27}  {:<16}  {:>3}  {:<36}  {}",
                    event.position,
                    time(event.recorded_at),
                    event.event.event_type(),
                    event.stream_version,
                    stream_name(&event),
                    details(&event)
                )
            };
            match written {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    failed = Some(error);
                    ControlFlow::Break(())
                }
            }
        })
        .await?;
    match failed {
        Some(error) => Err(error.into()),
        None => Ok(listed),
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `sha256:` and the first 12 hex digits of the SHA-256 of a password hash.
pub fn fingerprint(password_hash: &str) -> String {
    let digest = Sha256::digest(password_hash.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn client(event: &RecordedEvent) -> String {
    match (event.metadata.client_ip, event.metadata.redacted) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(redaction)) => redaction.placeholder().to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// The table's stream column: the user's id, or `signing-keys`.
fn stream_name(event: &RecordedEvent) -> String {
    event
        .event
        .user_id()
        .map_or_else(|| "signing-keys".to_owned(), |id| id.to_string())
}

/// Who made a change no request asked for (`by=`), or where a request came from (`from=`).
fn origin(event: &RecordedEvent) -> String {
    match &event.metadata.actor {
        Some(actor) => format!("by={actor:?}"),
        None => format!("from={}", client(event)),
    }
}

fn details(event: &RecordedEvent) -> String {
    match &event.event {
        // The sealed private key is never printed, not even sealed.
        Event::SigningKeyAdded(added) => format!(
            "key={} alg={} {}",
            added.key_id,
            added.algorithm,
            origin(event)
        ),
        Event::SigningKeyActivated(activated) => {
            format!("key={} {}", activated.key_id, origin(event))
        }
        Event::SigningKeyRetired(retired) => {
            format!("key={} {}", retired.key_id, origin(event))
        }
        Event::LogKeyRotated(rotated) => format!(
            "generation={} public_key={} {}",
            rotated.generation,
            rotated.public_key,
            origin(event)
        ),
        Event::UserRegistered(registered) => match &registered.imported {
            None => format!(
                "email={} password={} from={}",
                registered.email,
                fingerprint(registered.password_hash.as_str()),
                client(event)
            ),
            Some(imported) => format!(
                "email={} password={} imported_from={:?} row={} id={} {}",
                registered.email,
                fingerprint(registered.password_hash.as_str()),
                imported.source,
                imported.row,
                imported.id.as_deref().unwrap_or("-"),
                origin(event)
            ),
        },
        Event::PasswordRehashed(rehashed) => format!(
            "password={} from={}",
            fingerprint(rehashed.password_hash.as_str()),
            client(event)
        ),
        Event::PasswordChanged(changed) => format!(
            "password={} from={}",
            fingerprint(changed.password_hash.as_str()),
            client(event)
        ),
        Event::SessionStarted(started) => format!(
            "session={} expires={} idle={}s from={}",
            started.session_id,
            time(started.expires_at),
            started.idle_seconds,
            client(event)
        ),
        Event::SessionEnded(ended) => format!(
            "session={} reason={} from={}",
            ended.session_id,
            ended.reason.as_str(),
            client(event)
        ),
        Event::RoleGranted(granted) => format!("role={} {}", granted.role, origin(event)),
        Event::RoleRevoked(revoked) => format!("role={} {}", revoked.role, origin(event)),
        Event::UserDisabled(_)
        | Event::UserEnabled(_)
        | Event::LockoutCleared(_)
        | Event::UserErased(_) => origin(event),
        // The fields it has, each personal one as `<erased>` or `<sealed>`.
        Event::Redacted(redacted) => {
            let mut fields: Vec<String> = redacted
                .payload
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(name, _)| name.as_str() != "user_id")
                .map(|(name, value)| {
                    let name = if name == "password_hash" {
                        "password"
                    } else {
                        name
                    };
                    match value {
                        Value::String(text) => format!("{name}={text}"),
                        other => format!("{name}={other}"),
                    }
                })
                .collect();
            fields.push(origin(event));
            fields.join(" ")
        }
        Event::LoginSucceeded(_) | Event::LoginFailed(_) => format!("from={}", client(event)),
    }
}

fn event_json(event: &RecordedEvent) -> Value {
    let mut payload = event.event.payload();
    // A hash is fingerprinted; `<erased>` or `<sealed>` in its place is shown as it is.
    if let Some(hash) = payload.get("password_hash").and_then(Value::as_str)
        && !matches!(event.event, Event::Redacted(_))
    {
        payload["password_hash"] = json!(fingerprint(hash));
    }
    if payload.get("sealed_private_key").is_some() {
        payload["sealed_private_key"] = json!("<sealed>");
    }
    json!({
        "position": event.position,
        "recorded_at": time(event.recorded_at),
        "event_type": event.event.event_type(),
        "event_version": event.event.event_version(),
        "stream_id": event.stream_id(),
        "stream_version": event.stream_version,
        "payload": payload,
        "metadata": metadata_json(event),
    })
}

/// The metadata, with the sealed address and user agent shown as `<erased>` or `<sealed>` when
/// they cannot be read.
fn metadata_json(event: &RecordedEvent) -> Value {
    let mut metadata = event.metadata.to_json();
    if let (Some(redaction), Value::Object(fields)) = (event.metadata.redacted, &mut metadata) {
        fields.insert("client_ip".to_owned(), json!(redaction.placeholder()));
        fields.insert("user_agent".to_owned(), json!(redaction.placeholder()));
    }
    metadata
}

/// How far past `replay --at` the log is still read for events recorded earlier.
const TIME_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Up to when `replay` applies the log.
#[derive(Debug, Clone, Copy)]
pub enum ReplayPoint {
    At(DateTime<Utc>),
    Position(i64),
}

/// What `replay` has folded so far.
struct Replayed {
    state: State,
    selector: Option<UserSelector>,
    history: Vec<RecordedEvent>,
    last_time: Option<DateTime<Utc>>,
}

impl Replayed {
    /// Applies `event` if it is before `point`; breaks once the log is past it.
    fn take(&mut self, event: RecordedEvent, point: ReplayPoint) -> ControlFlow<()> {
        // By time, every event recorded up to `at`, as `events --until` lists them. Appends
        // take their time under the log's lock, so times never go backwards; in logs written
        // before they did, two writers' times could, by milliseconds. So later events are
        // skipped rather than ending the replay, until a minute past `at`.
        match point {
            ReplayPoint::At(at) if event.recorded_at > at + TIME_SKEW => {
                return ControlFlow::Break(());
            }
            ReplayPoint::At(at) if event.recorded_at > at => return ControlFlow::Continue(()),
            ReplayPoint::Position(to) if event.position > to => return ControlFlow::Break(()),
            _ => {}
        }
        self.last_time = Some(event.recorded_at);
        self.state.apply(&event);
        if self.selector.as_mut().is_some_and(|s| s.matches(&event)) {
            self.history.push(event);
        }
        ControlFlow::Continue(())
    }
}

/// `authlog replay`: the state as of a moment, from the same `apply` code the service uses,
/// and, for `--user`, that user's history and whether they could log in then.
///
/// With `trust`, only rows a log signature of those keys covers are applied: the replay stops
/// before the first that is not, and says so.
pub async fn replay(
    store: &dyn EventStore,
    point: ReplayPoint,
    user: Option<&str>,
    policy: ThrottlePolicy,
    trust: Option<Trust>,
    out: &mut impl Write,
) -> Result<(), AuditError> {
    let mut replayed = Replayed {
        state: State::new(policy),
        selector: user.map(UserSelector::parse),
        history: Vec::new(),
        last_time: None,
    };
    let mut guard = Guard::new(trust, store.first_signed().await?);
    let mut refused = None;
    let mut reached = false;
    linked_after(store, 0)
        .for_each(|row| {
            let (released, untrusted) = guard.push(row);
            for event in released {
                if replayed.take(event, point).is_break() {
                    reached = true;
                    return ControlFlow::Break(());
                }
            }
            match untrusted {
                Some(untrusted) => {
                    refused = Some(untrusted);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        })
        .await?;
    if !reached && refused.is_none() {
        let (released, alarm) = guard.finish_read();
        for event in released {
            if replayed.take(event, point).is_break() {
                break;
            }
        }
        refused = alarm;
    }
    let Replayed {
        state,
        history,
        last_time,
        ..
    } = replayed;
    if let Some(untrusted) = refused {
        writeln!(
            out,
            "REFUSED: {untrusted}; the replay stops at position {}",
            state.position()
        )?;
    }
    if !guard.checks() {
        writeln!(
            out,
            "signatures: not checked (give --public-key, or the master key)"
        )?;
    }
    let now = match point {
        ReplayPoint::At(at) => at,
        ReplayPoint::Position(_) => last_time.unwrap_or_else(Utc::now),
    };
    let directory = state.directory();
    let users = directory.users();
    let logins: u64 = users.iter().map(|u| u.logins).sum();
    let failed: u64 = users.iter().map(|u| u.failed_logins).sum();
    writeln!(out, "as of {} (position {})", time(now), state.position())?;
    writeln!(out, "users: {}", directory.len())?;
    writeln!(out, "logins: {logins} succeeded, {failed} failed")?;
    let Some(raw) = user else {
        return Ok(());
    };
    writeln!(out, "user {raw}:")?;
    for event in &history {
        writeln!(
            out,
            "  {}  #{}  {}  {}",
            time(event.recorded_at),
            event.position,
            event.event.event_type(),
            details(event)
        )?;
    }
    let Some(entry) = history
        .first()
        .and_then(|e| e.event.user_id())
        .and_then(|id| directory.get(id))
    else {
        writeln!(out, "could log in at {}: no (not registered)", time(now))?;
        return Ok(());
    };
    // Sessions started and not ended by `now`, nor past their absolute end. An idle timeout
    // is not in the log (a refresh appends nothing), so a session listed here may have gone
    // idle; each line says the idle rule it started under.
    let live: Vec<_> = directory
        .sessions_of(entry.id)
        .into_iter()
        .filter(|(_, session)| session.expires_at > now)
        .collect();
    writeln!(out, "sessions live at {}: {}", time(now), live.len())?;
    for (id, session) in &live {
        let idle = history
            .iter()
            .find_map(|event| match &event.event {
                Event::SessionStarted(started) if started.session_id == *id => {
                    Some(started.idle_seconds)
                }
                _ => None,
            })
            .unwrap_or_default();
        writeln!(
            out,
            "  session {id} since {} from {} until {} at the latest (idle timeout {idle} s)",
            time(session.started_at),
            session
                .client_ip
                .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            time(session.expires_at),
        )?;
    }
    let subject = Subject::User(entry.id);
    let throttle = state.throttle();
    let locked = throttle.locked_addresses(&subject, now);
    let new_address = throttle.check_login(&subject, None, now);
    if locked.is_empty() && new_address.is_ok() {
        writeln!(
            out,
            "could log in at {}: yes, with the right password, from any address",
            time(now)
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "could log in at {}: yes, with the right password, except:",
        time(now)
    )?;
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    for (address, wait) in locked {
        let address =
            address.map_or_else(|| "(no address)".to_owned(), |ip: IpAddr| ip.to_string());
        lines.insert(
            address,
            format!("locked for {} s more", wait.retry_after_seconds()),
        );
    }
    if let Err(wait) = new_address {
        lines.insert(
            "addresses that never logged in to it".to_owned(),
            format!(
                "refused for {} s more (account-wide limit)",
                wait.retry_after_seconds()
            ),
        );
    }
    for (address, why) in lines {
        writeln!(out, "  from {address}: {why}")?;
    }
    Ok(())
}
