//! The sources `authlog import` reads: a PostgreSQL table (the FastAPI tutorial's `users`), a
//! JSONL file or a CSV file. Each yields its rows in order, numbered, as text; what the text
//! means (an email, a bcrypt hash) is parsed once, later, by the domain types.

use std::io::BufRead;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::StreamExt as _;
use serde::Deserialize;

/// Where the users come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A table in another PostgreSQL database, read in one read-only transaction.
    Postgres {
        /// Parsed once, from `--from-postgres` (its `Debug` hides the password); boxed, as it
        /// is many times the size of a path.
        config: Box<tokio_postgres::Config>,
        table: String,
        columns: Columns,
    },
    /// One JSON object per line.
    Jsonl(PathBuf),
    /// A header line naming the columns, then one user per record.
    Csv(PathBuf),
}

/// The columns of a PostgreSQL source that hold a row's id, email, password hash and
/// (optionally) creation time. The tutorial's `users` table: `id,email,hashed_password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: Option<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "id".to_owned(),
            email: "email".to_owned(),
            password_hash: "hashed_password".to_owned(),
            created_at: None,
        }
    }
}

impl Columns {
    /// `ID,EMAIL,HASH` or `ID,EMAIL,HASH,CREATED_AT`, as `--columns` takes them.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let names: Vec<&str> = raw.split(',').map(str::trim).collect();
        if names.iter().any(|name| name.is_empty()) {
            return Err(format!("{raw:?} has an empty column name"));
        }
        match names[..] {
            [id, email, hash] => Ok(Self {
                id: id.to_owned(),
                email: email.to_owned(),
                password_hash: hash.to_owned(),
                created_at: None,
            }),
            [id, email, hash, created] => Ok(Self {
                id: id.to_owned(),
                email: email.to_owned(),
                password_hash: hash.to_owned(),
                created_at: Some(created.to_owned()),
            }),
            _ => Err(format!(
                "{raw:?}: give ID,EMAIL,HASH or ID,EMAIL,HASH,CREATED_AT (the tutorial's table: \
                 id,email,hashed_password)"
            )),
        }
    }
}

/// One row as the source holds it, before its email and hash are parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its place in the source: the row's number in id order (PostgreSQL), or its line (files).
    pub number: u64,
    pub id: Option<String>,
    pub email: String,
    pub password_hash: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// A row that could not be read as one user: its place, its id if that much was read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub number: u64,
    pub id: Option<String>,
    pub why: String,
}

/// What a source yields for each row.
pub type Read = Result<Row, Unreadable>;

/// Why a source could not be read at all (as opposed to one bad row in it).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Csv(String),
    #[error("the source database: {0}")]
    Postgres(String),
}

impl Source {
    /// The name the log records for it, unless `--source` gives one: the database and table
    /// (never the host or the credentials), or the file's name.
    pub fn default_name(&self) -> String {
        match self {
            Source::Postgres { config, table, .. } => {
                let database = config
                    .get_dbname()
                    .or(config.get_user())
                    .unwrap_or("postgres");
                format!("postgresql:{database}/{table}")
            }
            Source::Jsonl(path) => format!("jsonl:{}", file_name(path)),
            Source::Csv(path) => format!("csv:{}", file_name(path)),
        }
    }

    /// What a row's number is: a row of the table, or a line of the file.
    pub fn row_word(&self) -> &'static str {
        match self {
            Source::Postgres { .. } => "row",
            Source::Jsonl(_) | Source::Csv(_) => "line",
        }
    }

    /// What is read, for the first line of the report: no credentials.
    pub fn describe(&self) -> String {
        match self {
            Source::Postgres { config, table, .. } => {
                let host = match config.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                    Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                    None => "localhost".to_owned(),
                };
                let port = config.get_ports().first().copied().unwrap_or(5432);
                let database = config.get_dbname().unwrap_or("(default)");
                format!("table {table:?} in database {database:?} on {host}:{port}")
            }
            Source::Jsonl(path) | Source::Csv(path) => path.display().to_string(),
        }
    }

    /// Reads every row in order and hands it to `each`, which may stop the read.
    pub async fn read(&self, each: impl FnMut(Read) -> ControlFlow<()>) -> Result<(), SourceError> {
        match self {
            Source::Postgres {
                config,
                table,
                columns,
            } => read_postgres(config, table, columns, each).await,
            Source::Jsonl(path) => read_jsonl(path, each),
            Source::Csv(path) => read_csv(path, each),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// `name` as a PostgreSQL identifier, quoted; `schema.table` quotes each part.
fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The table in id order, inside one read-only, repeatable-read transaction: a consistent
/// picture even while the old app keeps writing, and nothing in that database is ever changed.
/// A URL without a password takes it from `PGPASSWORD`, as psql does, so it need not show in
/// `ps`.
async fn read_postgres(
    config: &tokio_postgres::Config,
    table: &str,
    columns: &Columns,
    mut each: impl FnMut(Read) -> ControlFlow<()>,
) -> Result<(), SourceError> {
    let failed = |error: tokio_postgres::Error| {
        SourceError::Postgres(crate::diagnostics::error_chain(&error))
    };
    let mut config = config.clone();
    if config.get_password().is_none()
        && let Some(password) = std::env::var_os("PGPASSWORD")
    {
        config.password(password.as_encoded_bytes());
    }
    let (mut client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(failed)?;
    let driver = tokio::spawn(connection);
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(failed)?;
    transaction
        .batch_execute("SET LOCAL TIME ZONE 'UTC'")
        .await
        .map_err(failed)?;
    let created = columns.created_at.as_deref().map_or_else(
        || "NULL::timestamptz".to_owned(),
        |name| format!("{}::timestamptz", quoted(name)),
    );
    let query = format!(
        "SELECT {id}::text, {email}::text, {hash}::text, {created} FROM {table} ORDER BY {id}",
        id = quoted(&columns.id),
        email = quoted(&columns.email),
        hash = quoted(&columns.password_hash),
        table = quoted(table),
    );
    let rows = transaction
        .query_raw(query.as_str(), std::iter::empty::<i32>())
        .await
        .map_err(failed)?;
    // Dropped before the rollback, even when `each` stops early: an unread stream would hold
    // the connection (and the rollback behind it).
    let mut rows = Box::pin(rows);
    let mut number = 0;
    while let Some(row) = rows.next().await {
        let row = row.map_err(failed)?;
        number += 1;
        let id: Option<String> = row.try_get(0).map_err(failed)?;
        let email: Option<String> = row.try_get(1).map_err(failed)?;
        let hash: Option<String> = row.try_get(2).map_err(failed)?;
        let created_at: Option<DateTime<Utc>> = row.try_get(3).map_err(failed)?;
        let read = match (email, hash) {
            (Some(email), Some(password_hash)) => Ok(Row {
                number,
                id,
                email,
                password_hash,
                created_at,
            }),
            (None, _) => Err(Unreadable {
                number,
                id,
                why: format!("{} is NULL", columns.email),
            }),
            (_, None) => Err(Unreadable {
                number,
                id,
                why: format!("{} is NULL", columns.password_hash),
            }),
        };
        if each(read).is_break() {
            break;
        }
    }
    drop(rows);
    transaction.rollback().await.map_err(failed)?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// A file row's fields. `hashed_password` (the tutorial's column name) is taken for
/// `password_hash`; other fields are ignored.
#[derive(Deserialize)]
struct FileRow {
    email: Option<String>,
    #[serde(alias = "hashed_password")]
    password_hash: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

impl FileRow {
    fn into_row(self, number: u64) -> Read {
        let id = match self.id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(id)) if id.trim().is_empty() => None,
            Some(serde_json::Value::String(id)) => Some(id.trim().to_owned()),
            Some(serde_json::Value::Number(id)) => Some(id.to_string()),
            Some(_) => {
                return Err(Unreadable {
                    number,
                    id: None,
                    why: "id must be a number or a string".to_owned(),
                });
            }
        };
        let missing = |field: &str| Unreadable {
            number,
            id: id.clone(),
            why: format!("no {field}"),
        };
        let email = self.email.ok_or_else(|| missing("email"))?;
        let password_hash = self.password_hash.ok_or_else(|| missing("password_hash"))?;
        let created_at = match self.created_at.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(parse_time(raw).ok_or_else(|| Unreadable {
                number,
                id: id.clone(),
                why: format!(
                    "created_at {raw:?} is not a time: write it as RFC 3339, such as \
                     2024-05-01T09:30:00Z (a time without an offset is taken as UTC)"
                ),
            })?),
        };
        Ok(Row {
            number,
            id,
            email,
            password_hash,
            created_at,
        })
    }
}

/// RFC 3339, or a date and time without an offset (as PostgreSQL prints a `timestamp`), in UTC.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Some(time.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
        .map(|naive| naive.and_utc())
}

fn open(path: &Path) -> Result<std::fs::File, SourceError> {
    std::fs::File::open(path).map_err(|source| SourceError::File {
        path: path.display().to_string(),
        source,
    })
}

/// One JSON object per line; blank lines are skipped, and a line that is not valid UTF-8 or not
/// an object of the right fields is a bad row, not the end of the import.
fn read_jsonl(
    path: &Path,
    mut each: impl FnMut(Read) -> ControlFlow<()>,
) -> Result<(), SourceError> {
    let mut reader = std::io::BufReader::new(open(path)?);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| SourceError::File {
                path: path.display().to_string(),
                source,
            })?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let text = match std::str::from_utf8(&line) {
            Ok(text) => text.trim(),
            Err(_) => {
                let bad = Err(Unreadable {
                    number,
                    id: None,
                    why: "not UTF-8".to_owned(),
                });
                if each(bad).is_break() {
                    return Ok(());
                }
                continue;
            }
        };
        // A byte-order mark some editors put before the first line.
        let text = text.trim_start_matches('\u{feff}');
        if text.is_empty() {
            continue;
        }
        let row = serde_json::from_str::<FileRow>(text)
            .map_err(|error| Unreadable {
                number,
                id: None,
                why: format!(
                    "not a JSON object with email and password_hash: {}",
                    json_why(&error)
                ),
            })
            .and_then(|row| row.into_row(number));
        if each(row).is_break() {
            return Ok(());
        }
    }
}

/// serde_json's complaint without its position (the line is already named), and without a
/// quoted value, which could be a password hash.
fn json_why(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof => "malformed JSON".to_owned(),
        Category::Data => {
            let text = error.to_string();
            let text = text.split(" at line ").next().unwrap_or(&text);
            if text.contains('"') {
                "a field has the wrong type".to_owned()
            } else {
                text.to_owned()
            }
        }
        Category::Io => "cannot read it".to_owned(),
    }
}

/// A CSV file whose header names the columns: `email` and `password_hash` (or
/// `hashed_password`), and optionally `created_at` and `id`, in any order; others are ignored.
fn read_csv(path: &Path, mut each: impl FnMut(Read) -> ControlFlow<()>) -> Result<(), SourceError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(open(path)?);
    let headers = reader
        .headers()
        .map_err(|error| SourceError::Csv(format!("cannot read the header line: {error}")))?
        .clone();
    let find = |names: &[&str]| {
        headers.iter().position(|header| {
            let header = header
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase();
            names.contains(&header.as_str())
        })
    };
    let (Some(email), Some(hash)) = (
        find(&["email"]),
        find(&["password_hash", "hashed_password"]),
    ) else {
        return Err(SourceError::Csv(format!(
            "the header line of {} must name the columns email and password_hash (or \
             hashed_password); it names {:?}",
            path.display(),
            headers.iter().collect::<Vec<_>>()
        )));
    };
    let created_at = find(&["created_at"]);
    let id = find(&["id"]);
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        let read = match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let number = record.position().map_or(line, csv::Position::line);
                let field = |index: Option<usize>| {
                    index
                        .and_then(|index| record.get(index))
                        .map(str::to_owned)
                        .filter(|value| !value.trim().is_empty())
                };
                FileRow {
                    email: field(Some(email)),
                    password_hash: field(Some(hash)),
                    created_at: field(created_at),
                    id: field(id).map(serde_json::Value::String),
                }
                .into_row(number)
            }
            Err(error) => {
                let number = error.position().map_or(line, csv::Position::line);
                let why = match error.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        format!("{len} fields where the header has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_owned(),
                    csv::ErrorKind::Io(_) => {
                        return Err(SourceError::Csv(format!(
                            "cannot read {}: {error}",
                            path.display()
                        )));
                    }
                    _ => "not a CSV record".to_owned(),
                };
                Err(Unreadable {
                    number,
                    id: None,
                    why,
                })
            }
        };
        if each(read).is_break() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_three_or_four_names() {
        assert_eq!(
            Columns::parse("id,email,hashed_password"),
            Ok(Columns::default())
        );
        let with_time = Columns::parse("uid, mail, pw, joined").expect("four");
        assert_eq!(with_time.created_at.as_deref(), Some("joined"));
        assert_eq!(with_time.email, "mail");
        for bad in ["id,email", "a,b,c,d,e", "id,,hash"] {
            assert!(Columns::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_are_quoted_so_a_name_is_never_sql() {
        assert_eq!(quoted("users"), "\"users\"");
        assert_eq!(quoted("app.users"), "\"app\".\"users\"");
        assert_eq!(
            quoted("x\"; DROP TABLE users; --"),
            "\"x\"\"; DROP TABLE users; --\""
        );
    }

    #[test]
    fn times_are_rfc3339_or_naive_utc() {
        let expected = DateTime::parse_from_rfc3339("2024-05-01T09:30:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        for raw in [
            "2024-05-01T09:30:00Z",
            "2024-05-01T11:30:00+02:00",
            "2024-05-01 09:30:00",
            "2024-05-01T09:30:00.000",
        ] {
            assert_eq!(parse_time(raw), Some(expected), "{raw}");
        }
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2024-13-01 00:00:00"), None);
    }

    #[test]
    fn the_default_name_holds_no_host_or_credentials() {
        let source = Source::Postgres {
            config: Box::new(
                "postgres://app:s3cret@db.internal:5432/fastapi_auth"
                    .parse()
                    .expect("a PostgreSQL URL"),
            ),
            table: "users".to_owned(),
            columns: Columns::default(),
        };
        assert_eq!(source.default_name(), "postgresql:fastapi_auth/users");
        let described = source.describe();
        assert!(!described.contains("s3cret"), "{described}");
        assert!(described.contains("fastapi_auth"), "{described}");
        assert!(
            !format!("{source:?}").contains("s3cret"),
            "Debug hides the password"
        );
        assert_eq!(
            Source::Jsonl(PathBuf::from("/tmp/export/users.jsonl")).default_name(),
            "jsonl:users.jsonl"
        );
    }
}
