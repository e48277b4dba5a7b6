//! `authlog import` with the real binary: the FastAPI tutorial's own table, built with `psql`
//! and filled with passlib-format bcrypt hashes, imported into a PostgreSQL log while a server
//! runs on it, then logged into with the original passwords; JSONL and CSV files with every
//! kind of bad row; the idempotent re-run, `--strict`, `--dry-run`, and an erased user who is
//! not brought back.

use std::path::Path;
use std::process::Command;

use crate::common::TestDatabase;
use crate::common::service::{Service, embedded_env, login_at, run};

/// What passlib's `CryptContext(schemes=["bcrypt"])` stores: `$2b$`, a two-digit cost, then
/// 22 characters of salt and 31 of digest in bcrypt's base64. The `bcrypt` crate writes the
/// same format; `variant` rewrites the prefix for the `$2a$` and `$2y$` spellings of the same
/// algorithm.
fn passlib_hash(password: &str, cost: u32, variant: &str) -> String {
    let hash = bcrypt::hash(password, cost).expect("bcrypt");
    assert!(hash.starts_with("$2b$"), "passlib's format");
    format!("${variant}{}", &hash[3..])
}

fn psql(url: &str, sql: &str) -> String {
    psql_with(url, &["-c", sql])
}

/// The tutorial's table, empty: the one the benchmark fills (`bench/tutorial_users.sql`, the
/// table SQLAlchemy's `create_all` makes from the tutorial's `User` model), with no rows.
fn create_tutorial_table(url: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/tutorial_users.sql");
    psql_with(url, &["-v", "rows=0", "-f", script]);
}

fn psql_with(url: &str, args: &[&str]) -> String {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At"])
        .args(args)
        .output()
        .expect("psql is installed (Debian's postgresql-client)");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `(email, password, cost, variant)` rows of the tutorial's table.
const TUTORIAL_USERS: [(&str, &str, u32, &str); 4] = [
    ("alice@example.com", "alice-original-pw", 4, "2b"),
    ("Bob@Example.com", "bob-original-pw!", 5, "2b"),
    ("carol@example.com", "carol's pw, with spaces", 4, "2a"),
    ("dave@example.com", "dåve-ünïcode-pw", 4, "2y"),
];

#[actix_web::test]
async fn the_tutorials_table_is_imported_while_a_server_runs_and_its_passwords_log_in() {
    let source = TestDatabase::create().await;
    let log = TestDatabase::create().await;
    create_tutorial_table(&source.url());
    // The exact column types the tutorial's model makes.
    let types = psql(
        &source.url(),
        "SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM \
         information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
    );
    assert_eq!(
        types.lines().collect::<Vec<_>>(),
        [
            "id integer NO",
            "email character varying YES",
            "hashed_password character varying YES"
        ]
    );
    for (email, password, cost, variant) in TUTORIAL_USERS {
        let hash = passlib_hash(password, cost, variant);
        psql(
            &source.url(),
            &format!("INSERT INTO users (email, hashed_password) VALUES ('{email}', '{hash}')"),
        );
    }
    // Rows the tutorial's app could hold that cannot become users: no hash, a bad email.
    psql(
        &source.url(),
        "INSERT INTO users (email, hashed_password) VALUES ('nohash@example.com', NULL), \
         ('not an email', '$2b$04$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq')",
    );

    // A server with a higher cost than the imported hashes: the first login rehashes.
    let mut env = log.service_env();
    env.push(("AUTHLOG_BCRYPT_COST".to_owned(), "6".to_owned()));
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let before = login_at(
        &http,
        &service.address,
        "alice@example.com",
        "alice-original-pw",
    )
    .await;
    assert_eq!(before.status(), 401, "not imported yet");

    // The README's one command (the source URL's password would come from PGPASSWORD).
    let (status, stdout, stderr) = run(&env, &["import", "--from-postgres", &source.url()]);
    assert!(status.success(), "import failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("imported 4 of 6 rows"),
        "the summary: {stdout}"
    );
    assert!(
        stdout.contains("skipped row 5 (id 5): hashed_password is NULL"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped row 6 (id 6): the email \"not an email\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("$2b$"),
        "no hash is ever printed: {stdout}"
    );
    assert!(!stderr.contains("$2b$"), "no hash is ever logged: {stderr}");

    // The running server sees them at once, and the original passwords work, in any case of
    // the email as the tutorial stored it.
    for (email, password, ..) in TUTORIAL_USERS {
        let response = login_at(&http, &service.address, email, password).await;
        assert_eq!(
            response.status(),
            200,
            "{email} logs in with the original password"
        );
        let wrong = login_at(&http, &service.address, email, "not-the-password").await;
        assert_eq!(wrong.status(), 401, "{email}: a wrong password is refused");
    }
    let bob = || {
        login_at(
            &http,
            &service.address,
            "bob@example.com",
            "bob-original-pw!",
        )
    };
    assert_eq!(
        bob().await.status(),
        200,
        "the normalised email logs in too"
    );

    // Each user's UserRegistered says where it came from; the first logins rehashed at 6.
    let client = log.client().await;
    let imported: Vec<(String, i64)> = client
        .query(
            "SELECT payload->'imported'->>'source', (payload->'imported'->>'id')::bigint \
             FROM events WHERE event_type = 'UserRegistered' ORDER BY position",
            &[],
        )
        .await
        .expect("read the log")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let source_name = format!("postgresql:{}/users", source.name());
    assert_eq!(
        imported,
        (1..=4)
            .map(|id| (source_name.clone(), id))
            .collect::<Vec<_>>()
    );
    let rehashed: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'PasswordRehashed'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        rehashed, 4,
        "every imported hash (cost 4 or 5) was replaced at cost 6"
    );
    assert_eq!(bob().await.status(), 200, "and the new hash works");

    // Again: nothing new, and it says so.
    let head = log.head().await;
    let (status, stdout, _) = run(&env, &["import", "--from-postgres", &source.url()]);
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.contains("imported 0 of 6 rows: nothing new to import"),
        "{stdout}"
    );
    assert!(stdout.contains("4  already registered"), "{stdout}");
    assert_eq!(log.head().await, head, "the re-run appended nothing");

    // An erased user stays erased: a later run finds the row's id in the log.
    let (status, stdout, stderr) = run(&env, &["admin", "erase", "--email", "dave@example.com"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    let (status, stdout, _) = run(&env, &["import", "--from-postgres", &source.url()]);
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.contains("skipped row 4 (id 4): this source's row with this id was imported before"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing new to import"), "{stdout}");
}

const GOOD_HASH: &str = "$2b$04$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the source file");
    path.display().to_string()
}

/// The users the embedded log holds, by `authlog events`.
fn registered(env: &[(String, String)]) -> Vec<String> {
    let (status, stdout, stderr) = run(env, &["events", "--type", "UserRegistered"]);
    assert!(status.success(), "{stderr}");
    stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("email="))
                .map(str::to_owned)
        })
        .collect()
}

#[actix_web::test]
async fn jsonl_and_csv_report_every_kind_of_bad_row_and_strict_appends_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let env = embedded_env(&data);
    // A server on the same data directory the whole time: it sees each import at once.
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let alice = passlib_hash("alice-original-pw", 4, "2b");
    let jsonl = write(
        dir.path(),
        "users.jsonl",
        &format!(
            "{{\"id\": 1, \"email\": \"Alice@Example.com\", \"password_hash\": \"{alice}\", \"created_at\": \"2021-03-04T05:06:07Z\"}}\n\
             {{\"id\": 2, \"email\": \"ALICE@example.com\", \"password_hash\": \"{GOOD_HASH}\"}}\n\
             {{\"id\": 3, \"email\": \"not-an-email\", \"password_hash\": \"{GOOD_HASH}\"}}\n\
             {{\"id\": 4, \"email\": \"argon@example.com\", \"password_hash\": \"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\"}}\n\
             {{\"id\": 5, \"email\": \"cost@example.com\", \"password_hash\": \"$2b$03$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq\"}}\n\
             {{\"id\": 6, \"email\": \"plain@example.com\", \"password_hash\": \"hunter2hunter2\"}}\n\
             {{\"id\": 7, \"email\": \"nohash@example.com\"}}\n\
             this line is not JSON\n\
             \n\
             {{\"id\": 9, \"email\": \"when@example.com\", \"password_hash\": \"{GOOD_HASH}\", \"created_at\": \"last tuesday\"}}\n\
             {{\"id\": 1, \"email\": \"sameid@example.com\", \"password_hash\": \"{GOOD_HASH}\"}}\n\
             {{\"id\": \"b-12\", \"email\": \"bob@example.com\", \"hashed_password\": \"{GOOD_HASH}\"}}\n"
        ),
    );

    // --strict stops at the first bad row (line 2 collides with line 1), appending nothing.
    let (status, stdout, stderr) = run(&env, &["import", "--jsonl", &jsonl, "--strict"]);
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr
            .contains("refused: --strict: line 2 (id 2): alice@example.com is also line 1's email"),
        "{stderr}"
    );
    assert!(registered(&env).is_empty(), "nothing appended");

    // --dry-run reports and appends nothing either.
    let (status, stdout, _) = run(&env, &["import", "--jsonl", &jsonl, "--dry-run"]);
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.contains("dry run: would import 2 of 11 rows"),
        "{stdout}"
    );
    assert!(registered(&env).is_empty(), "nothing appended");

    let (status, stdout, stderr) = run(&env, &["import", "--jsonl", &jsonl]);
    assert!(status.success(), "{stdout}\n{stderr}");
    // First, before anything else gives the server's half-second watch time to notice.
    let response = login_at(
        &http,
        &service.address,
        "alice@example.com",
        "alice-original-pw",
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "the running server knows her at once, without waiting for its watch"
    );
    for expected in [
        "skipped line 2 (id 2): alice@example.com is also line 1's email once normalised; line 1 is kept",
        "skipped line 3 (id 3): the email \"not-an-email\" is not a valid email address",
        "skipped line 4 (id 4): the password hash is a $argon2id$ hash, not bcrypt",
        "skipped line 5 (id 5): the bcrypt cost 3 is outside 4 to 31",
        "skipped line 6 (id 6): the password hash is not in a modular-crypt form",
        "skipped line 7 (id 7): no password_hash",
        "skipped line 8: not a JSON object with email and password_hash: malformed JSON",
        "skipped line 10 (id 9): created_at \"last tuesday\" is not a time",
        "skipped line 11 (id 1): line 1 has the same id; line 1 is kept",
        "imported 2 of 11 rows",
        "1  invalid emails",
        "3  unsupported password hashes",
        "3  unreadable rows",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("hunter2"),
        "a plaintext 'hash' is never echoed"
    );
    assert_eq!(registered(&env), ["alice@example.com", "bob@example.com"]);

    // CSV: the same fields by header, in another order, with its own bad rows; the users the
    // JSONL brought in are already registered.
    let csv = write(
        dir.path(),
        "users.csv",
        &format!(
            "password_hash,email,id,created_at\n\
             {GOOD_HASH},bob@example.com,1,\n\
             {GOOD_HASH},carol@example.com,2,2022-01-01 10:00:00\n\
             {GOOD_HASH},\"quoted, comma\"@example.com,3,\n\
             {GOOD_HASH},toofew@example.com\n\
             $2x$04$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq,buggy@example.com,5,\n\
             ,empty@example.com,6,\n\
             {GOOD_HASH},CAROL@EXAMPLE.COM,7,\n"
        ),
    );
    let (status, stdout, stderr) = run(&env, &["import", "--csv", &csv]);
    assert!(status.success(), "{stdout}\n{stderr}");
    for expected in [
        "skipped line 4 (id 3): the email",
        "skipped line 5: 2 fields where the header has 4",
        "skipped line 6 (id 5): the password hash is a $2x$ hash, not bcrypt",
        "skipped line 7 (id 6): no password_hash",
        "skipped line 8 (id 7): carol@example.com is also line 3's email once normalised",
        "imported 1 of 7 rows",
        "1  already registered",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    assert_eq!(
        registered(&env),
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );

    // Idempotent: both again add nothing, and say so.
    for (flag, path) in [("--jsonl", &jsonl), ("--csv", &csv)] {
        let (status, stdout, _) = run(&env, &["import", flag, path]);
        assert!(status.success(), "{stdout}");
        assert!(stdout.contains("nothing new to import"), "{stdout}");
    }
    assert_eq!(registered(&env).len(), 3);
}

#[actix_web::test]
async fn a_user_erased_after_an_import_is_not_brought_back_by_running_it_again() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = embedded_env(&dir.path().join("data"));
    let jsonl = write(
        dir.path(),
        "users.jsonl",
        &format!(
            "{{\"id\": 10, \"email\": \"gone@example.com\", \"password_hash\": \"{GOOD_HASH}\"}}\n\
             {{\"id\": 11, \"email\": \"stays@example.com\", \"password_hash\": \"{GOOD_HASH}\"}}\n"
        ),
    );
    let (status, stdout, _) = run(&env, &["import", "--jsonl", &jsonl]);
    assert!(status.success(), "{stdout}");
    let (status, stdout, stderr) = run(&env, &["admin", "erase", "--email", "gone@example.com"]);
    assert!(status.success(), "{stdout}\n{stderr}");

    let (status, stdout, _) = run(&env, &["import", "--jsonl", &jsonl]);
    assert!(status.success(), "{stdout}");
    assert!(
        stdout
            .contains("skipped line 1 (id 10): this source's row with this id was imported before"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing new to import"), "{stdout}");
    assert_eq!(registered(&env), ["<erased>", "stays@example.com"]);

    // Under another source name it is another source: the operator's explicit choice.
    let (status, stdout, _) = run(
        &env,
        &[
            "import",
            "--jsonl",
            &jsonl,
            "--source",
            "second-export",
            "--dry-run",
        ],
    );
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("would import 1 of 2 rows"), "{stdout}");
}
