//! `kill -9` of the real `authlog` binary on the embedded store, in the middle of sign-ups.
//!
//! Every sign-up answered 201 must survive and log in after a restart; a user may exist only if
//! its sign-up was answered 201 or was still in flight when the process died; tokens issued
//! before a crash still work after it (the generated key file is kept).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use authlog::events::{Event, SqliteEventStore, SqliteSettings, for_each_after};
use futures_util::future::join_all;
use serde_json::{Value, json};

const ROUNDS: usize = 3;
const CLIENTS: usize = 8;
const PASSWORD: &str = "crash-test-password";

/// The binary, started on a data directory, with its address read from its start-up log line.
struct Service {
    child: Child,
    address: String,
    startup_line: String,
}

impl Service {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_authlog"))
            .env_remove("DATABASE_URL")
            .env_remove("AUTHLOG_JWT_SECRET")
            .env("AUTHLOG_DATA_DIR", data_dir)
            .env("AUTHLOG_BIND", "127.0.0.1:0")
            .env("AUTHLOG_BCRYPT_COST", "4")
            .env("AUTHLOG_WORKERS", "2")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the authlog binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, address) = mpsc::channel();
        // Keeps reading, so the process never blocks on a full pipe; shows the log with TEST_LOG.
        std::thread::spawn(move || {
            let show = std::env::var_os("TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show {
                    eprintln!("authlog: {line}");
                }
                if line.contains("listening on http://") {
                    let _ = found.send(line);
                }
            }
        });
        let startup_line = match address.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("authlog did not log its address within 60 s");
            }
        };
        let address = startup_line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the start-up line names the URL")
            .to_owned();
        Self {
            child,
            address,
            startup_line,
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    /// Emails whose sign-up was sent.
    sent: HashSet<String>,
    /// Answered 201.
    acknowledged: HashSet<String>,
    /// Answered with anything else: these must not exist.
    refused: HashSet<String>,
    /// Sent, and the connection died before an answer: they may or may not exist.
    in_flight: HashSet<String>,
}

async fn sign_up_until_stopped(
    address: String,
    round: usize,
    client: usize,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let http = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let email = format!("crash-{round}-{client}-{i}@example.com");
        let response = http
            .post(format!("{address}/signup"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let mut outcomes = outcomes.lock().expect("not poisoned");
        match response {
            Ok(response) if response.status() == 201 => {
                outcomes.sent.insert(email.clone());
                outcomes.acknowledged.insert(email);
            }
            Ok(response) => {
                outcomes.sent.insert(email.clone());
                outcomes.refused.insert(email);
                drop(outcomes);
                panic!("sign-up answered {}", response.status());
            }
            // Nothing was sent: the process is gone.
            Err(error) if error.is_connect() => return,
            Err(_) => {
                outcomes.sent.insert(email.clone());
                outcomes.in_flight.insert(email);
                return;
            }
        }
    }
}

async fn login(http: &reqwest::Client, address: &str, email: &str) -> reqwest::Response {
    http.post(format!("{address}/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login answered")
}

/// A pseudo-random delay from the OS's randomness (via UUID v4), so each run kills at a
/// different moment.
fn random_millis(range: std::ops::Range<u64>) -> u64 {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    range.start + random % (range.end - range.start)
}

#[actix_rt::test]
async fn kill_9_mid_signup_loses_no_acknowledged_user_and_invents_none() {
    let data = tempfile::tempdir().expect("temp dir");
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let http = reqwest::Client::new();
    let mut early_token: Option<String> = None;

    for round in 0..ROUNDS {
        let service = Service::start(data.path());
        assert!(
            service.startup_line.contains("embedded SQLite"),
            "the start-up line names the store: {}",
            service.startup_line
        );

        // Everything acknowledged so far, in earlier rounds, is still there.
        if let Some(token) = &early_token {
            let profile = http
                .get(format!("{}/profile", service.address))
                .bearer_auth(token)
                .send()
                .await
                .expect("profile answered");
            assert_eq!(profile.status(), 200, "a token survives a kill -9");
        }

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                actix_rt::spawn(sign_up_until_stopped(
                    service.address.clone(),
                    round,
                    client,
                    Arc::clone(&stop),
                    Arc::clone(&outcomes),
                ))
            })
            .collect();

        if early_token.is_none() {
            // Take a token from the first acknowledged user, to use after the crash.
            let email = loop {
                actix_rt::time::sleep(Duration::from_millis(20)).await;
                let outcomes = outcomes.lock().expect("not poisoned");
                if let Some(email) = outcomes.acknowledged.iter().next() {
                    break email.clone();
                }
            };
            let body: Value = login(&http, &service.address, &email)
                .await
                .json()
                .await
                .expect("token body");
            early_token = body["access_token"].as_str().map(str::to_owned);
        }

        actix_rt::time::sleep(Duration::from_millis(random_millis(300..1500))).await;
        service.kill_9();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client
                .await
                .expect("client task finished without panicking");
        }
    }

    let outcomes = Arc::try_unwrap(outcomes)
        .ok()
        .expect("clients are done")
        .into_inner()
        .expect("not poisoned");
    assert!(
        outcomes.acknowledged.len() > 100,
        "the test signed up too few users to mean anything: {}",
        outcomes.acknowledged.len()
    );
    assert!(
        !outcomes.in_flight.is_empty(),
        "no sign-up was in flight at any kill; the test did not crash mid-signup"
    );
    assert!(outcomes.refused.is_empty());

    // A final restart: every acknowledged user logs in; in-flight ones either exist or do not.
    let service = Service::start(data.path());
    let address = service.address.clone();
    let acknowledged: Vec<&String> = outcomes.acknowledged.iter().collect();
    for chunk in acknowledged.chunks(64) {
        let statuses = join_all(chunk.iter().map(|email| login(&http, &address, email))).await;
        for (email, response) in chunk.iter().zip(statuses) {
            assert_eq!(
                response.status(),
                200,
                "{email} was acknowledged but cannot log in"
            );
        }
    }
    let mut in_flight_registered = 0;
    for email in &outcomes.in_flight {
        match login(&http, &address, email).await.status().as_u16() {
            200 => in_flight_registered += 1,
            401 => {}
            status => panic!("{email}: login answered {status}"),
        }
    }
    service.kill_9();

    // The log itself: every registration was sent by a client and was acknowledged or in
    // flight, and every acknowledged one is there.
    let store = SqliteEventStore::open(&SqliteSettings::in_dir(data.path()))
        .await
        .expect("the log opens after the crashes");
    let mut registered = HashSet::new();
    for_each_after(&store, 0, |event| {
        if let Event::UserRegistered(user) = event.event {
            registered.insert(user.email.as_str().to_owned());
        }
    })
    .await
    .expect("the log reads back");
    for email in &registered {
        assert!(
            outcomes.acknowledged.contains(email) || outcomes.in_flight.contains(email),
            "{email} is registered but its sign-up was never acknowledged nor in flight"
        );
    }
    assert!(outcomes.acknowledged.is_subset(&registered));
    assert_eq!(
        registered.len(),
        outcomes.acknowledged.len() + in_flight_registered,
        "the HTTP view and the log agree on the in-flight sign-ups that committed"
    );

    let key = data.path().join("jwt-secret");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    eprintln!(
        "crash test: {} acknowledged, {} in flight at a kill ({} of them committed)",
        outcomes.acknowledged.len(),
        outcomes.in_flight.len(),
        in_flight_registered
    );
}
