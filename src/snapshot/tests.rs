//! Snapshots against the fold they cache: random logs, cut anywhere, must restore to exactly
//! what a full replay gives; and every kind of mismatch must fall back to that replay.

use std::net::IpAddr;

use chrono::{TimeDelta, Utc};

use super::*;
use crate::domain::{Email, KeyAlgorithm, KeyId, PasswordHash, Role, SessionId, UserId};
use crate::events::InMemoryEventStore;
use crate::events::signed::encode_key;
use crate::events::{
    EndReason, Event, EventMetadata, LockoutCleared, LogKeyRotated, LoginFailed, LoginSucceeded,
    NewEvent, PasswordChanged, RoleGranted, RoleRevoked, SessionEnded, SessionStarted,
    SigningKeyActivated, SigningKeyAdded, UserDisabled, UserEnabled, UserErased, UserRegistered,
};

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Account {
    id: UserId,
    version: i32,
    sessions: Vec<SessionId>,
}

/// Random batches of every event the fold reads, valid as the deciders would write them.
struct Generator {
    rng: Rng,
    users: Vec<Account>,
    registered: u64,
    key_version: i32,
    log_key_version: i32,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            users: Vec::new(),
            registered: 0,
            key_version: 0,
            log_key_version: 0,
        }
    }

    fn metadata(&mut self) -> EventMetadata {
        let ip: Option<IpAddr> = match self.rng.below(4) {
            0 => None,
            1 => Some([203, 0, 113, 7].into()),
            2 => Some("2001:db8::5".parse().expect("ip")),
            _ => Some([198, 51, 100, self.rng.below(3) as u8].into()),
        };
        let agent = (self.rng.below(2) == 0).then_some("test/1");
        EventMetadata::new(ip, agent)
    }

    fn user_event(&mut self, index: usize, event: Event) -> NewEvent {
        let metadata = self.metadata();
        let user = &mut self.users[index];
        user.version += 1;
        NewEvent {
            stream_version: user.version,
            event,
            metadata,
        }
    }

    fn batch(&mut self, signer: &LogSigner) -> Vec<NewEvent> {
        let size = 1 + self.rng.below(4) as usize;
        let mut batch = Vec::new();
        for _ in 0..size {
            if let Some(event) = self.event(signer) {
                let alone = matches!(event.event, Event::LogKeyRotated(_));
                if alone {
                    if batch.is_empty() {
                        return vec![event];
                    }
                    break;
                }
                batch.push(event);
            }
        }
        batch
    }

    fn event(&mut self, signer: &LogSigner) -> Option<NewEvent> {
        let choice = self.rng.below(100);
        if self.users.is_empty() || choice < 20 {
            self.registered += 1;
            let id = UserId::new();
            let email = Email::parse(&format!("u{}@example.com", self.registered)).ok()?;
            self.users.push(Account {
                id,
                version: 0,
                sessions: Vec::new(),
            });
            let hash = PasswordHash::new(format!("$2b$04${:053}", self.registered));
            let event = Event::UserRegistered(UserRegistered {
                user_id: id,
                email,
                password_hash: hash,
                imported: None,
            });
            return Some(self.user_event(self.users.len() - 1, event));
        }
        if choice == 99 && self.log_key_version < 2 {
            self.log_key_version += 1;
            let generation = self.log_key_version as u32 + 1;
            return Some(NewEvent {
                stream_version: self.log_key_version,
                event: Event::LogKeyRotated(LogKeyRotated {
                    generation,
                    public_key: encode_key(&signer.public_key(generation)),
                }),
                metadata: EventMetadata::default(),
            });
        }
        if choice == 98 && self.key_version < 2 {
            self.key_version += 1;
            let key_id = KeyId::parse("k1").ok()?;
            let event = if self.key_version == 1 {
                Event::SigningKeyAdded(SigningKeyAdded {
                    key_id,
                    algorithm: KeyAlgorithm::EdDSA,
                    public_key: vec![7; 32],
                    sealed_private_key: vec![9; 72],
                })
            } else {
                Event::SigningKeyActivated(SigningKeyActivated { key_id })
            };
            return Some(NewEvent {
                stream_version: self.key_version,
                event,
                metadata: EventMetadata::default(),
            });
        }
        let index = self.rng.below(self.users.len() as u64) as usize;
        let user_id = self.users[index].id;
        let role = || Role::parse(["admin", "support"][(user_id.as_uuid().as_u128() % 2) as usize]);
        let event = match choice {
            20..=44 => Event::LoginSucceeded(LoginSucceeded { user_id }),
            45..=59 => Event::LoginFailed(LoginFailed { user_id }),
            60..=69 => {
                let session_id = SessionId::new();
                self.users[index].sessions.push(session_id);
                Event::SessionStarted(SessionStarted {
                    user_id,
                    session_id,
                    expires_at: Utc::now() + TimeDelta::days(1),
                    idle_seconds: 3600,
                })
            }
            70..=75 => {
                let session_id = self.users[index].sessions.pop()?;
                Event::SessionEnded(SessionEnded {
                    user_id,
                    session_id,
                    reason: EndReason::Logout,
                })
            }
            76..=79 => Event::PasswordChanged(PasswordChanged {
                user_id,
                password_hash: PasswordHash::new(format!("$2b$05${:053}", choice)),
            }),
            80..=83 => Event::RoleGranted(RoleGranted {
                user_id,
                role: role().ok()?,
            }),
            84..=86 => Event::RoleRevoked(RoleRevoked {
                user_id,
                role: role().ok()?,
            }),
            87..=88 => Event::UserDisabled(UserDisabled { user_id }),
            89..=91 => Event::UserEnabled(UserEnabled { user_id }),
            92..=94 => Event::LockoutCleared(LockoutCleared { user_id }),
            95..=96 => Event::LoginSucceeded(LoginSucceeded { user_id }),
            _ => {
                let event = self.user_event(index, Event::UserErased(UserErased { user_id }));
                self.users.swap_remove(index);
                return Some(event);
            }
        };
        Some(self.user_event(index, event))
    }
}

/// The state's snapshot body: equal bytes, equal state (each part writes all it holds).
fn body(state: &State) -> Vec<u8> {
    let mut w = Writer::default();
    state.write_snapshot(&mut w);
    w.into_bytes()
}

fn policy() -> ThrottlePolicy {
    ThrottlePolicy::default()
}

async fn append_all(store: &InMemoryEventStore, generator: &mut Generator, batches: usize) {
    let signer = store.log_signer().expect("the memory store signs");
    for _ in 0..batches {
        let batch = generator.batch(&signer);
        if !batch.is_empty() {
            store.append(batch).await.expect("a valid batch appends");
        }
    }
}

#[tokio::test]
async fn a_snapshot_then_the_tail_restores_exactly_what_a_full_replay_gives() {
    let mut from_snapshots = 0;
    for seed in 1..=40u64 {
        let store = InMemoryEventStore::new();
        let mut generator = Generator::new(seed);
        let before = 1 + (seed as usize * 7) % 40;
        let after = (seed as usize * 13) % 30;
        append_all(&store, &mut generator, before).await;
        let taken = take(&store).await.expect("taken").expect("written");
        assert!(taken.kept, "seed {seed}");
        append_all(&store, &mut generator, after).await;

        let (restored, how) = restore(&store, policy()).await.expect("restored");
        let replayed = State::replay(&store, policy()).await.expect("replayed");
        assert_eq!(body(&restored), body(&replayed), "seed {seed}");
        assert_eq!(restored.directory(), replayed.directory(), "seed {seed}");
        assert_eq!(restored.position(), replayed.position(), "seed {seed}");
        assert_eq!(
            restored.log_key_generation(),
            replayed.log_key_generation(),
            "seed {seed}"
        );
        assert_eq!(
            restored.guard().head(),
            replayed.guard().head(),
            "seed {seed}"
        );
        assert!(restored.untrusted().is_none() && replayed.untrusted().is_none());
        // A restored state reads on as a replayed one does: one more append, both follow it.
        let erased_after = store.events().iter().any(|event| {
            event.position > taken.position && matches!(event.event, Event::UserErased(_))
        });
        match how {
            Restored::Snapshot { position, tail } => {
                assert!(
                    !erased_after,
                    "seed {seed}: an erasure deletes the snapshots"
                );
                assert_eq!(position, taken.position);
                assert_eq!(tail as i64, replayed.position() - position);
                from_snapshots += 1;
            }
            Restored::Replay => assert!(erased_after, "seed {seed}: the snapshot was ignored"),
        }
    }
    // The rest had an erasure in the tail, which deletes the snapshots: a full replay then.
    assert!(
        from_snapshots >= 15,
        "{from_snapshots} of 40 seeds started from their snapshot"
    );
}

#[tokio::test]
async fn a_snapshot_that_does_not_match_the_log_is_ignored_and_the_log_replayed() {
    let store = InMemoryEventStore::new();
    let mut generator = Generator::new(7);
    append_all(&store, &mut generator, 20).await;
    let taken = take(&store).await.expect("taken").expect("written");
    let good = store
        .read_snapshot(taken.position)
        .await
        .expect("read")
        .expect("kept");
    let signer = store.log_signer().expect("signer");
    let first_signed = store.first_signed().await.expect("first");
    assert!(decode(&good, &signer, policy(), first_signed).is_ok());

    // Truncated, altered, or another version: refused before it is used.
    let truncated = &good[..good.len() - 100];
    assert_eq!(
        decode(truncated, &signer, policy(), first_signed).err(),
        Some(Refused::DoesNotOpen)
    );
    let mut altered = good.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    assert_eq!(
        decode(&altered, &signer, policy(), first_signed).err(),
        Some(Refused::DoesNotOpen)
    );
    let mut older = good.clone();
    // The format follows the header's length (4 bytes) and the magic (16).
    older[20..24].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        decode(&older, &signer, policy(), first_signed).err(),
        Some(Refused::Format(0))
    );
    assert_eq!(
        decode(b"not a snapshot at all", &signer, policy(), first_signed).err(),
        Some(Refused::NotASnapshot)
    );
    // Another master key cannot open it.
    let stranger = InMemoryEventStore::new()
        .log_signer()
        .expect("another signer");
    assert_eq!(
        decode(&good, &stranger, policy(), first_signed).err(),
        Some(Refused::DoesNotOpen)
    );

    // Each stored in place of the good one: the start replays the log, and gets it right.
    let replayed = body(&State::replay(&store, policy()).await.expect("replayed"));
    for bad in [truncated.to_vec(), altered, older] {
        store.replace_snapshot(taken.position, bad);
        let (state, how) = restore(&store, policy()).await.expect("restored");
        assert_eq!(how, Restored::Replay);
        assert_eq!(body(&state), replayed);
    }
    // The good one is used again.
    store.replace_snapshot(taken.position, good.clone());
    let (_, how) = restore(&store, policy()).await.expect("restored");
    assert!(matches!(how, Restored::Snapshot { .. }));

    // A log with another hash at the snapshot's position (the same master key, another log).
    let other = InMemoryEventStore::sharing_keys_with(&store);
    append_all(&other, &mut Generator::new(8), 40).await;
    other.replace_snapshot(taken.position, good.clone());
    let (header, _) = header(&good).expect("header");
    assert_eq!(
        matches_log(&other, &header).await.expect("read"),
        Err(Refused::OtherHash {
            position: taken.position
        })
    );
    let (state, how) = restore(&other, policy()).await.expect("restored");
    assert_eq!(how, Restored::Replay);
    assert_eq!(
        body(&state),
        body(&State::replay(&other, policy()).await.expect("replayed"))
    );
    // A log cut back before the snapshot's position.
    let short = InMemoryEventStore::sharing_keys_with(&store);
    append_all(&short, &mut Generator::new(7), 2).await;
    assert_eq!(
        matches_log(&short, &header).await.expect("read"),
        Err(Refused::NoSuchRow {
            position: taken.position
        })
    );
}

#[tokio::test]
async fn an_erasure_deletes_every_snapshot_and_a_snapshot_from_before_it_is_not_kept() {
    let store = InMemoryEventStore::new();
    let mut generator = Generator::new(3);
    append_all(&store, &mut generator, 10).await;
    let state = State::replay(&store, policy()).await.expect("replayed");
    let signer = store.log_signer().expect("signer");
    let before = encode(&state, &signer, Utc::now()).expect("encoded");
    assert!(
        store
            .write_snapshot(state.position(), before.clone())
            .await
            .expect("written")
    );
    assert_eq!(
        store.snapshots().await.expect("listed"),
        vec![state.position()]
    );

    let index = 0;
    let erase = generator.user_event(
        index,
        Event::UserErased(UserErased {
            user_id: generator.users[index].id,
        }),
    );
    store.append(vec![erase]).await.expect("erased");
    assert!(store.snapshots().await.expect("listed").is_empty());
    // A snapshot folded before the erasure, written after it, is dropped.
    assert!(
        !store
            .write_snapshot(state.position(), before)
            .await
            .expect("written")
    );
    assert!(store.snapshots().await.expect("listed").is_empty());
}
