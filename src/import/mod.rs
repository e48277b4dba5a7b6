//! `authlog import`: users brought from another system (the FastAPI tutorial's `users` table, or
//! a JSONL or CSV export) with the bcrypt hashes it kept, so that nobody has to reset a password.
//!
//! Three steps, in this order, so that `--strict` and `--dry-run` append nothing:
//! 1. **read**: every row is parsed once ([`Email::parse`], [`PasswordHash::import`]) into a
//!    candidate or a skipped row, and rows that collide after normalisation keep the first
//!    ([`Intake`], pure);
//! 2. **plan**: candidates whose email is registered already, or whose source row this source
//!    brought in before (an erased user is not brought back), are skipped ([`against_log`],
//!    pure);
//! 3. **append**: each candidate goes to a [`crate::actors::UserRegistry`] as an [`Import`] message, so the
//!    log's only writer decides and appends it as it does a sign-up, group commit batching
//!    them; running servers apply the events as they apply any other writer's.

pub mod progress;
pub mod source;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor as _;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;

use crate::actors::{Import, RegistryError};
use crate::domain::{Email, PasswordHash};
use crate::events::{Event, EventMetadata, EventStore, Imported, StoreError, rows_after};
use crate::operate::Outcome;
use progress::{Progress, grouped, per_second};
pub use source::{Columns, Read, Row, Source, SourceError, Unreadable};

/// Imports sent to the registry and not answered yet: enough to fill several group-commit
/// batches (512 commands each) while one is being written.
const IN_FLIGHT: usize = 4096;
/// The actor named in the metadata of every event an import appends.
pub const ACTOR: &str = "authlog import";

/// How `authlog import` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the log records as each user's source ([`Imported::source`]).
    pub source_name: String,
    /// The first row that cannot be imported as it is aborts the import, with nothing appended.
    pub strict: bool,
    /// Report what would be imported, and append nothing.
    pub dry_run: bool,
}

/// Why a row was not imported, in the order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Unreadable,
    InvalidEmail,
    UnsupportedHash,
    /// Its email, normalised, is an earlier row's: the first is kept.
    Collision,
    /// Its id is an earlier row's: the first is kept.
    RepeatedId,
    /// The email is registered in the log already (a re-run, or a sign-up).
    Registered,
    /// This source brought this row (by id) in before, and that user is not in the directory
    /// now: erased since, or their email changed at the source.
    ImportedBefore,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable rows",
            Reason::InvalidEmail => "invalid emails",
            Reason::UnsupportedHash => "unsupported password hashes",
            Reason::Collision => "emails that collide with an earlier row after normalisation",
            Reason::RepeatedId => "ids that repeat an earlier row's",
            Reason::Registered => "already registered",
            Reason::ImportedBefore => {
                "imported before by this source (erased since, or the email changed there)"
            }
        }
    }

    /// A row the source should not hold: `--strict` stops at the first. A row that is already
    /// in the log is not one (running the import again must succeed).
    pub fn is_bad(self) -> bool {
        !matches!(self, Reason::Registered | Reason::ImportedBefore)
    }
}

/// A row that parsed into a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub number: u64,
    pub id: Option<String>,
    pub email: Email,
    pub password_hash: PasswordHash,
    pub created_at: Option<DateTime<Utc>>,
}

/// A row left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub number: u64,
    pub id: Option<String>,
    pub reason: Reason,
    pub why: String,
}

impl Skipped {
    /// `line 7 (id 3): the email …`, with `word` naming what a number counts.
    pub fn describe(&self, word: &str) -> String {
        let id = self
            .id
            .as_deref()
            .map_or_else(String::new, |id| format!(" (id {id})"));
        format!("{word} {}{id}: {}", self.number, self.why)
    }

    /// The report's line for it.
    pub fn line(&self, word: &str) -> String {
        format!("skipped {}", self.describe(word))
    }
}

/// Rows in, in source order: candidates, and rows skipped for what they hold or for colliding
/// with an earlier row.
#[derive(Debug, Default)]
pub struct Intake {
    /// What a row's number counts ([`Source::row_word`]), for the messages.
    word: &'static str,
    pub rows: u64,
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<Skipped>,
    first_by_email: HashMap<Email, u64>,
    first_by_id: HashMap<String, u64>,
}

impl Intake {
    pub fn new(word: &'static str) -> Self {
        Self {
            word,
            ..Self::default()
        }
    }

    /// Takes the next row; the reason it was skipped, if it was.
    pub fn take(&mut self, read: Read) -> Option<&Skipped> {
        self.rows += 1;
        let skipped = match self.parse(read) {
            Ok(candidate) => {
                self.candidates.push(candidate);
                return None;
            }
            Err(skipped) => skipped,
        };
        self.skipped.push(skipped);
        self.skipped.last()
    }

    fn parse(&mut self, read: Read) -> Result<Candidate, Skipped> {
        let row = read.map_err(|unreadable| Skipped {
            number: unreadable.number,
            id: unreadable.id,
            reason: Reason::Unreadable,
            why: unreadable.why,
        })?;
        let skip = |reason, why: String| Skipped {
            number: row.number,
            id: row.id.clone(),
            reason,
            why,
        };
        let email = Email::parse(&row.email).map_err(|error| {
            skip(
                Reason::InvalidEmail,
                format!("the email {:?} {error}", row.email.trim()),
            )
        })?;
        let password_hash = PasswordHash::import(&row.password_hash)
            .map_err(|error| skip(Reason::UnsupportedHash, error.to_string()))?;
        if let Some(first) = self.first_by_email.get(&email) {
            return Err(skip(
                Reason::Collision,
                format!(
                    "{email} is also {word} {first}'s email once normalised; {word} {first} is \
                     kept",
                    word = self.word
                ),
            ));
        }
        if let Some(id) = &row.id {
            if let Some(first) = self.first_by_id.get(id) {
                return Err(skip(
                    Reason::RepeatedId,
                    format!(
                        "{word} {first} has the same id; {word} {first} is kept",
                        word = self.word
                    ),
                ));
            }
            self.first_by_id.insert(id.clone(), row.number);
        }
        self.first_by_email.insert(email.clone(), row.number);
        Ok(Candidate {
            number: row.number,
            id: row.id,
            email,
            password_hash,
            created_at: row.created_at,
        })
    }
}

/// The candidates to append, and those the log already has: a registered email, or an id this
/// source imported before.
pub fn against_log(
    candidates: Vec<Candidate>,
    registered: impl Fn(&Email) -> bool,
    imported_before: &HashSet<String>,
) -> (Vec<Candidate>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut fresh = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let reason = if registered(&candidate.email) {
            Some((
                Reason::Registered,
                format!("{} is registered already", candidate.email),
            ))
        } else if candidate
            .id
            .as_ref()
            .is_some_and(|id| imported_before.contains(id))
        {
            Some((
                Reason::ImportedBefore,
                "this source's row with this id was imported before, and that user has been \
                 erased since (or the row's email changed): not brought back"
                    .to_owned(),
            ))
        } else {
            None
        };
        match reason {
            Some((reason, why)) => skipped.push(Skipped {
                number: candidate.number,
                id: candidate.id,
                reason,
                why,
            }),
            None => fresh.push(candidate),
        }
    }
    (fresh, skipped)
}

/// The ids of `source`'s rows imported into the log so far, the erased users' included (the
/// import record is not personal data, so it outlives the user's key). Read from the rows as
/// stored: no user's key is unwrapped, and nothing sealed is opened.
pub async fn imported_ids(
    store: &dyn EventStore,
    source: &str,
) -> Result<HashSet<String>, StoreError> {
    let mut ids = HashSet::new();
    rows_after(store, 0)
        .for_each(|row| {
            let columns = &row.columns;
            if columns.event_type == Event::USER_REGISTERED
                && let Some(imported) = columns.payload.get("imported")
                && imported.get("source").and_then(|from| from.as_str()) == Some(source)
                && let Ok(Imported { id: Some(id), .. }) =
                    serde_json::from_value::<Imported>(imported.clone())
            {
                ids.insert(id);
            }
            ControlFlow::Continue(())
        })
        .await?;
    Ok(ids)
}

/// What an import did, for its last lines.
#[derive(Debug, Default)]
pub struct Summary {
    pub rows: u64,
    pub imported: u64,
    pub skipped: BTreeMap<Reason, u64>,
    pub elapsed: Duration,
    pub dry_run: bool,
}

impl Summary {
    fn count(&mut self, reason: Reason) {
        *self.skipped.entry(reason).or_default() += 1;
    }

    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let skipped: u64 = self.skipped.values().sum();
        let seconds = self.elapsed.as_secs_f64();
        if self.dry_run {
            writeln!(
                out,
                "dry run: would import {} of {} rows; nothing was appended",
                grouped(self.imported),
                grouped(self.rows)
            )?;
        } else if self.imported == 0 {
            writeln!(
                out,
                "imported 0 of {} rows: nothing new to import ({seconds:.2} s)",
                grouped(self.rows)
            )?;
        } else {
            writeln!(
                out,
                "imported {} of {} rows in {seconds:.2} s ({} users/s)",
                grouped(self.imported),
                grouped(self.rows),
                grouped(per_second(self.imported, self.elapsed))
            )?;
        }
        if skipped > 0 {
            writeln!(out, "skipped {}:", grouped(skipped))?;
            for (reason, count) in &self.skipped {
                writeln!(out, "  {:>9}  {}", grouped(*count), reason.label())?;
            }
        }
        Ok(())
    }
}

/// Reads `source`, then (unless a dry run) imports its users into the log `store` holds,
/// reporting skipped rows and a summary to `out` and progress to standard error.
/// [`Outcome::Refused`] if `--strict` met a bad row (nothing appended).
pub async fn run(
    source: &Source,
    store: Arc<dyn EventStore>,
    options: &Options,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let word = source.row_word();
    writeln!(out, "reading {}", source.describe())?;
    out.flush()?;
    let mut intake = Intake::new(word);
    let mut refused = None;
    source
        .read(|read| match intake.take(read) {
            Some(skipped) if options.strict && skipped.reason.is_bad() => {
                refused = Some(skipped.describe(word));
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .await?;
    for skipped in &intake.skipped {
        writeln!(out, "{}", skipped.line(word))?;
    }
    if let Some(line) = refused {
        return Ok(Outcome::Refused(format!(
            "--strict: {line}; nothing was appended"
        )));
    }
    let mut summary = Summary {
        rows: intake.rows,
        dry_run: options.dry_run,
        ..Summary::default()
    };
    for skipped in &intake.skipped {
        summary.count(skipped.reason);
    }

    let registry = crate::operate::replayed(Arc::clone(&store)).await?;
    let directory = registry.directory();
    let needs_history = intake
        .candidates
        .iter()
        .any(|candidate| candidate.id.is_some() && directory.by_email(&candidate.email).is_none());
    let before = if needs_history {
        imported_ids(store.as_ref(), &options.source_name).await?
    } else {
        HashSet::new()
    };
    let (fresh, in_log) = against_log(
        intake.candidates,
        |email| directory.by_email(email).is_some(),
        &before,
    );
    for skipped in &in_log {
        summary.count(skipped.reason);
        // A re-run would list every row: only the rows kept out on purpose are named.
        if skipped.reason == Reason::ImportedBefore {
            writeln!(out, "{}", skipped.line(word))?;
        }
    }
    // The registry is started only to append: one that never ran is simply dropped.
    if options.dry_run || fresh.is_empty() {
        if options.dry_run {
            summary.imported = fresh.len() as u64;
        }
        summary.elapsed = started.elapsed();
        summary.write(out)?;
        return Ok(Outcome::Done);
    }
    let appended = append(registry.start(), fresh, &options.source_name).await;
    summary.imported = appended.imported;
    let mut raced = appended.raced;
    raced.sort_by_key(|skipped| skipped.number);
    for skipped in &raced {
        summary.count(skipped.reason);
        writeln!(out, "{}", skipped.line(word))?;
    }
    summary.elapsed = started.elapsed();
    summary.write(out)?;
    match appended.failure {
        None => Ok(Outcome::Done),
        Some(error) => Err(error.context(format!(
            "the import stopped after {} users; run the same command again to import the rest \
             (users already imported are skipped)",
            grouped(summary.imported)
        ))),
    }
}

/// What the appending step did.
struct Appended {
    imported: u64,
    /// Rows whose email was registered between the plan and their append.
    raced: Vec<Skipped>,
    /// Why it stopped early, if it did.
    failure: Option<anyhow::Error>,
}

/// Sends each candidate to `registry` as an [`Import`], [`IN_FLIGHT`] at a time so that group
/// commit fills its batches, showing progress; stops at the first error that is not a taken
/// email.
async fn append(
    registry: actix::Addr<crate::actors::UserRegistry>,
    fresh: Vec<Candidate>,
    source_name: &str,
) -> Appended {
    let mut progress = Progress::new(fresh.len() as u64);
    let sends = futures_util::stream::iter(fresh.into_iter().map(|candidate| {
        let number = candidate.number;
        let id = candidate.id.clone();
        let email = candidate.email.clone();
        let sent = registry.send(Import {
            email: candidate.email,
            password_hash: candidate.password_hash,
            imported: Imported {
                source: source_name.to_owned(),
                id: candidate.id,
                row: candidate.number,
                created_at: candidate.created_at,
            },
            metadata: EventMetadata::by(ACTOR),
        });
        async move { (number, id, email, sent.await) }
    }))
    .buffer_unordered(IN_FLIGHT);
    let mut sends = std::pin::pin!(sends);
    let mut appended = Appended {
        imported: 0,
        raced: Vec::new(),
        failure: None,
    };
    while let Some((number, id, email, answer)) = sends.next().await {
        match answer {
            Ok(Ok(_)) => {
                appended.imported += 1;
                progress.advance(1);
            }
            // Signed up (or imported by another run) since the directory was read.
            Ok(Err(RegistryError::EmailTaken)) => appended.raced.push(Skipped {
                number,
                id,
                reason: Reason::Registered,
                why: format!("{email} was registered meanwhile"),
            }),
            Ok(Err(error)) => {
                appended.failure = Some(anyhow::Error::new(error));
                break;
            }
            Err(error) => {
                appended.failure = Some(anyhow::Error::new(error));
                break;
            }
        }
    }
    progress.finish();
    appended
}
