//! The import's pure steps: rows to candidates and skips, candidates against the log, the
//! summary.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq";

fn row(number: u64, id: Option<&str>, email: &str, hash: &str) -> Read {
    Ok(Row {
        number,
        id: id.map(str::to_owned),
        email: email.to_owned(),
        password_hash: hash.to_owned(),
        created_at: None,
    })
}

fn reasons(intake: &Intake) -> Vec<(u64, Reason)> {
    intake
        .skipped
        .iter()
        .map(|skipped| (skipped.number, skipped.reason))
        .collect()
}

#[test]
fn rows_that_collide_once_normalised_keep_the_first() {
    let mut intake = Intake::new("row");
    for read in [
        row(1, Some("1"), "Alice@Example.com", HASH),
        row(2, Some("2"), "  alice@EXAMPLE.com ", HASH),
        // Fullwidth letters are the same address after NFKC.
        row(3, Some("3"), "ａｌｉｃｅ@example.com", HASH),
        row(4, Some("4"), "bob@example.com", HASH),
    ] {
        intake.take(read);
    }
    let kept: Vec<&str> = intake
        .candidates
        .iter()
        .map(|candidate| candidate.email.as_str())
        .collect();
    assert_eq!(kept, ["alice@example.com", "bob@example.com"]);
    assert_eq!(
        reasons(&intake),
        [(2, Reason::Collision), (3, Reason::Collision)]
    );
    assert_eq!(
        intake.skipped[0].line("row"),
        "skipped row 2 (id 2): alice@example.com is also row 1's email once normalised; row 1 \
         is kept"
    );
    assert_eq!(intake.rows, 4);
}

#[test]
fn every_kind_of_bad_row_is_skipped_with_its_reason() {
    let mut intake = Intake::new("line");
    let unreadable = Err(Unreadable {
        number: 1,
        id: None,
        why: "malformed JSON".to_owned(),
    });
    let skipped = intake.take(unreadable).cloned();
    assert_eq!(
        skipped.map(|skipped| skipped.reason),
        Some(Reason::Unreadable)
    );
    intake.take(row(2, None, "not-an-email", HASH));
    intake.take(row(3, None, "c@example.com", "$argon2id$v=19$x$y"));
    intake.take(row(4, Some("9"), "d@example.com", HASH));
    intake.take(row(5, Some("9"), "e@example.com", HASH));
    assert!(intake.take(row(6, None, "f@example.com", HASH)).is_none());
    assert_eq!(
        reasons(&intake),
        [
            (1, Reason::Unreadable),
            (2, Reason::InvalidEmail),
            (3, Reason::UnsupportedHash),
            (5, Reason::RepeatedId),
        ]
    );
    assert!(
        [
            Reason::Unreadable,
            Reason::InvalidEmail,
            Reason::UnsupportedHash,
            Reason::Collision,
            Reason::RepeatedId
        ]
        .iter()
        .all(|reason| reason.is_bad()),
        "--strict stops at each of them"
    );
    assert!(!Reason::Registered.is_bad() && !Reason::ImportedBefore.is_bad());
}

#[test]
fn registered_emails_and_rows_imported_before_are_left_out() {
    let mut intake = Intake::new("row");
    intake.take(row(1, Some("1"), "old@example.com", HASH));
    intake.take(row(2, Some("2"), "erased@example.com", HASH));
    intake.take(row(3, Some("3"), "new@example.com", HASH));
    intake.take(row(4, None, "noid@example.com", HASH));
    let before: HashSet<String> = ["1", "2"].into_iter().map(str::to_owned).collect();
    let (fresh, skipped) = against_log(
        intake.candidates,
        |email| email.as_str() == "old@example.com",
        &before,
    );
    let fresh: Vec<u64> = fresh.iter().map(|candidate| candidate.number).collect();
    assert_eq!(fresh, [3, 4]);
    let skipped: Vec<(u64, Reason)> = skipped
        .iter()
        .map(|skipped| (skipped.number, skipped.reason))
        .collect();
    assert_eq!(
        skipped,
        [(1, Reason::Registered), (2, Reason::ImportedBefore)]
    );
}

fn summary_text(summary: &Summary) -> String {
    let mut out = Vec::new();
    summary.write(&mut out).expect("written");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn the_summary_says_what_was_done_and_why_rows_were_skipped() {
    let mut summary = Summary {
        rows: 100_000,
        imported: 99_990,
        elapsed: Duration::from_secs(4),
        ..Summary::default()
    };
    for _ in 0..7 {
        summary.count(Reason::Registered);
    }
    for _ in 0..3 {
        summary.count(Reason::InvalidEmail);
    }
    let text = summary_text(&summary);
    assert_eq!(
        text,
        "imported 99,990 of 100,000 rows in 4.00 s (24,998 users/s)\n\
         skipped 10:\n\
         \x20         3  invalid emails\n\
         \x20         7  already registered\n"
    );
    summary.imported = 0;
    assert!(
        summary_text(&summary).starts_with("imported 0 of 100,000 rows: nothing new to import")
    );
    summary.dry_run = true;
    summary.imported = 5;
    assert!(
        summary_text(&summary)
            .starts_with("dry run: would import 5 of 100,000 rows; nothing was appended")
    );
}
