//! Snapshots with the real binary on the embedded store: `authlog snapshot` while a server
//! runs, a restart that starts from it, a damaged snapshot ignored with a warning naming why,
//! and an erasure that deletes every snapshot.

use std::path::Path;
use std::time::Duration;

use crate::common::service::{Service, embedded_env, login_at, run, signup_at};

const PASSWORD: &str = "correct-horse-battery";

fn snapshot_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("snapshots"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
                .collect()
        })
        .unwrap_or_default()
}

async fn everyone_logs_in(http: &reqwest::Client, service: &Service, emails: &[String]) {
    for email in emails {
        let status = login_at(http, &service.address, email, PASSWORD)
            .await
            .status();
        assert_eq!(status.as_u16(), 200, "{email} logs in");
    }
}

fn start_line(service: &Service, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = service
            .log_lines()
            .into_iter()
            .find(|line| line.contains(needle))
        {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {needle:?}: {:#?}",
            service.log_lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[actix_web::test]
async fn a_restart_starts_from_the_snapshot_and_ignores_a_damaged_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = embedded_env(dir.path());
    let http = reqwest::Client::new();
    let service = Service::start(&env);
    let mut emails: Vec<String> = (0..4).map(|n| format!("snap{n}@example.com")).collect();
    for email in &emails {
        assert_eq!(
            signup_at(&http, &service.address, email, PASSWORD).await,
            201
        );
    }
    // Written on demand while the server runs; then one more sign-up: the tail.
    let (status, out, err) = run(&env, &["snapshot"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("snapshot of position") && out.contains("4 users"),
        "{out}"
    );
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    emails.push("snap-after@example.com".to_owned());
    assert_eq!(
        signup_at(&http, &service.address, &emails[4], PASSWORD).await,
        201
    );
    let (status, out, _) = run(&env, &["snapshot"]);
    assert!(status.success());
    assert!(
        out.contains("folded from the snapshot of position"),
        "{out}"
    );
    assert_eq!(
        snapshot_files(dir.path()).len(),
        2,
        "the newest two are kept"
    );
    service.terminate(Duration::from_secs(10));

    // A restart loads the newest snapshot and replays what follows it.
    let service = Service::start(&env);
    let line = start_line(&service, "started from a snapshot");
    assert!(line.contains("users=5"), "{line}");
    everyone_logs_in(&http, &service, &emails).await;
    service.terminate(Duration::from_secs(10));

    // Damaged: truncated, so its seal does not open. The start warns, naming why, falls back to
    // the older one, and serves the same users.
    let mut files = snapshot_files(dir.path());
    files.sort();
    let newest = files.last().expect("a snapshot");
    let bytes = std::fs::read(newest).expect("read");
    std::fs::write(newest, &bytes[..bytes.len() / 2]).expect("truncate");
    let service = Service::start(&env);
    let warning = start_line(&service, "ignoring the snapshot");
    assert!(warning.contains("does not open"), "{warning}");
    start_line(&service, "started from a snapshot");
    everyone_logs_in(&http, &service, &emails).await;
    service.terminate(Duration::from_secs(10));

    // An erasure deletes every snapshot: they hold the erased user's data.
    let (status, out, err) = run(&env, &["admin", "erase", "--email", &emails[0]]);
    assert!(status.success(), "{out}{err}");
    assert!(snapshot_files(dir.path()).is_empty());
    let service = Service::start(&env);
    assert!(
        !service
            .log_lines()
            .iter()
            .any(|line| line.contains("started from a snapshot"))
    );
    let status = login_at(&http, &service.address, &emails[0], PASSWORD)
        .await
        .status();
    assert_eq!(status.as_u16(), 401, "the erased user is gone");
    everyone_logs_in(&http, &service, &emails[1..]).await;
    service.terminate(Duration::from_secs(10));
}

/// Two embedded logs under one master key, so that one's snapshot opens for the other.
fn keyed(dir: &Path) -> Vec<(String, String)> {
    let mut env = embedded_env(dir);
    env.push((
        "AUTHLOG_MASTER_KEY".to_owned(),
        crate::common::TEST_MASTER_KEY.to_owned(),
    ));
    env
}

#[actix_web::test]
async fn a_snapshot_of_another_log_or_of_another_format_is_ignored() {
    let http = reqwest::Client::new();
    let ours = tempfile::tempdir().expect("temporary directory");
    let theirs = tempfile::tempdir().expect("temporary directory");
    let (env, other_env) = (keyed(ours.path()), keyed(theirs.path()));
    // The same number of sign-ups on both, so their snapshots name the same position.
    let mut emails = Vec::new();
    for (dir_env, tag) in [(&env, "ours"), (&other_env, "theirs")] {
        let service = Service::start(dir_env);
        for n in 0..3 {
            let email = format!("{tag}{n}@example.com");
            assert_eq!(
                signup_at(&http, &service.address, &email, PASSWORD).await,
                201
            );
            if tag == "ours" {
                emails.push(email);
            }
        }
        service.terminate(Duration::from_secs(10));
        let (status, out, err) = run(dir_env, &["snapshot"]);
        assert!(status.success(), "{out}{err}");
    }
    let ours_file = snapshot_files(ours.path()).pop().expect("our snapshot");
    let theirs_file = snapshot_files(theirs.path()).pop().expect("their snapshot");
    assert_eq!(
        ours_file.file_name(),
        theirs_file.file_name(),
        "same position"
    );
    let good = std::fs::read(&ours_file).expect("read");

    // Another log's snapshot at our position: it opens, but our row there has another hash.
    std::fs::copy(&theirs_file, &ours_file).expect("copy");
    let service = Service::start(&env);
    let warning = start_line(&service, "ignoring the snapshot");
    assert!(warning.contains("another chain hash"), "{warning}");
    everyone_logs_in(&http, &service, &emails).await;
    let status = login_at(&http, &service.address, "theirs0@example.com", PASSWORD)
        .await
        .status();
    assert_eq!(status.as_u16(), 401, "their users are not ours");
    service.terminate(Duration::from_secs(10));

    // Ours, but of another format (the header's format field, after its length and magic).
    let mut older = good.clone();
    older[20..24].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&ours_file, &older).expect("write");
    let service = Service::start(&env);
    let warning = start_line(&service, "ignoring the snapshot");
    assert!(warning.contains("has format 0"), "{warning}");
    everyone_logs_in(&http, &service, &emails).await;
    service.terminate(Duration::from_secs(10));

    // Ours as written: used.
    std::fs::write(&ours_file, &good).expect("write");
    let service = Service::start(&env);
    start_line(&service, "started from a snapshot");
    everyone_logs_in(&http, &service, &emails).await;
    service.terminate(Duration::from_secs(10));
}
