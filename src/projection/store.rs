//! How the directory keeps a million users in a few hundred bytes each: packed accounts in
//! dense per-shard vectors, found through small index tables, instead of one hash map of full
//! entries (whose power-of-two growth doubles every byte of an entry).
//!
//! - [`Account`]: a user's fields, with what most users never have (failures, sessions,
//!   password changes, roles) behind one optional box.
//! - [`Credentials`]: the email and the password hash in one allocation, a bcrypt hash as its
//!   41 raw bytes rather than 60 characters.
//! - [`Users`]: shards of `(Vec<Account>, HashTable<slot>)` behind read-write locks, so HTTP
//!   workers read while the registry writes, as with a concurrent map.
//! - [`EmailIndex`]: the email→user index holds only user ids; the address is the account's.

use std::hash::{BuildHasher, RandomState};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use hashbrown::HashTable;

use crate::domain::{Email, PasswordHash, Role, SessionId, UserId};

/// bcrypt's own base64 (`./A-Za-z0-9`, no padding), refusing non-zero trailing bits, so a
/// decoded hash encodes back to the same characters.
const BCRYPT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::BCRYPT,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

const HASH_CLEAR: u8 = 0;
const HASH_BCRYPT: u8 = 1;

/// A user's email and password hash in one allocation: `[email length][email][form][hash]`,
/// the hash either as it is (`form` 0) or, for the usual `$2?$NN$` + 53 characters, as the
/// variant letter, the cost and the 16-byte salt and 23-byte digest (`form` 1).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials(Box<[u8]>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Credentials").field(&self.email()).finish()
    }
}

impl Credentials {
    pub fn new(email: &str, hash: &str) -> Self {
        let email_len = u8::try_from(email.len()).unwrap_or(u8::MAX);
        let email = &email.as_bytes()[..usize::from(email_len)];
        let mut bytes = Vec::with_capacity(2 + email.len() + 41);
        bytes.push(email_len);
        bytes.extend_from_slice(email);
        match pack_bcrypt(hash) {
            Some(packed) => {
                bytes.push(HASH_BCRYPT);
                bytes.extend_from_slice(&packed);
            }
            None => {
                bytes.push(HASH_CLEAR);
                bytes.extend_from_slice(hash.as_bytes());
            }
        }
        Self(bytes.into_boxed_slice())
    }

    fn split(&self) -> (&[u8], u8, &[u8]) {
        let email_len = usize::from(self.0[0]);
        let (email, rest) = self.0[1..].split_at(email_len);
        (email, rest[0], &rest[1..])
    }

    pub fn email(&self) -> &str {
        std::str::from_utf8(self.split().0).unwrap_or_default()
    }

    pub fn password_hash(&self) -> PasswordHash {
        let (_, form, hash) = self.split();
        let text = match form {
            HASH_BCRYPT => unpack_bcrypt(hash),
            _ => String::from_utf8_lossy(hash).into_owned(),
        };
        PasswordHash::new(text)
    }

    /// The packed bytes, as a snapshot stores them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Packed bytes read back from a snapshot, if they have the packed form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let email_len = usize::from(*bytes.first()?);
        let email = bytes.get(1..1 + email_len)?;
        std::str::from_utf8(email).ok()?;
        let form = *bytes.get(1 + email_len)?;
        let hash = &bytes[2 + email_len..];
        let valid = match form {
            HASH_CLEAR => std::str::from_utf8(hash).is_ok(),
            HASH_BCRYPT => hash.len() == 41,
            _ => false,
        };
        valid.then(|| Self(bytes.into()))
    }

    /// With another password hash, the same email.
    pub fn with_hash(&self, hash: &str) -> Self {
        Self::new(self.email(), hash)
    }
}

/// `$2b$12$` + 22 characters of salt + 31 of digest → variant, cost, salt, digest (41 bytes),
/// if the hash has that form exactly and packs back to the same text.
fn pack_bcrypt(hash: &str) -> Option<[u8; 41]> {
    let bytes = hash.as_bytes();
    if bytes.len() != 60 || &bytes[..2] != b"$2" || bytes[3] != b'$' || bytes[6] != b'$' {
        return None;
    }
    let variant = bytes[2];
    let cost: u8 = hash.get(4..6)?.parse().ok()?;
    let mut packed = [0u8; 41];
    packed[0] = variant;
    packed[1] = cost;
    let salt = BCRYPT_B64.decode(&bytes[7..29]).ok()?;
    let digest = BCRYPT_B64.decode(&bytes[29..60]).ok()?;
    if salt.len() != 16 || digest.len() != 23 {
        return None;
    }
    packed[2..18].copy_from_slice(&salt);
    packed[18..41].copy_from_slice(&digest);
    (unpack_bcrypt(&packed) == hash).then_some(packed)
}

fn unpack_bcrypt(packed: &[u8]) -> String {
    let (head, rest) = packed.split_at(2.min(packed.len()));
    let (salt, digest) = rest.split_at(16.min(rest.len()));
    let variant = head.first().copied().map_or('b', char::from);
    let cost = head.get(1).copied().unwrap_or_default();
    format!(
        "$2{variant}${cost:02}${}{}",
        BCRYPT_B64.encode(salt),
        BCRYPT_B64.encode(digest)
    )
}

/// One user as the directory keeps them (the public form is [`super::UserEntry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub credentials: Credentials,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub disabled: bool,
    pub logins: u64,
    pub rare: Option<Box<Rare>>,
}

/// What most users never have, boxed so that they pay one pointer for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rare {
    pub failed_logins: u64,
    pub password_changes: u32,
    /// Sessions started and not ended or expired, oldest first.
    pub sessions: Vec<SessionId>,
    /// Sorted.
    pub roles: Box<[Role]>,
}

impl Account {
    pub fn rare(&self) -> Option<&Rare> {
        self.rare.as_deref()
    }

    /// Changes the rare part (made on first use, dropped when it holds nothing again).
    pub fn change_rare(&mut self, change: impl FnOnce(&mut Rare)) {
        let rare = self.rare.get_or_insert_with(Box::default);
        change(rare);
        if **rare == Rare::default() {
            self.rare = None;
        }
    }

    pub fn sessions(&self) -> &[SessionId] {
        self.rare().map_or(&[], |rare| &rare.sessions)
    }

    pub fn roles(&self) -> &[Role] {
        self.rare().map_or(&[], |rare| &rare.roles)
    }
}

const SHARDS: usize = 32;

#[derive(Debug, Clone, Default)]
struct Shard {
    accounts: Vec<Account>,
    /// Each account's index in `accounts`, hashed by its id.
    slots: HashTable<u32>,
}

/// The users, sharded; each shard's lock is held only for one lookup or one change. Hashed with
/// foldhash, not SipHash: user ids are random UUIDs the service makes, so nobody outside can
/// choose keys that collide.
#[derive(Debug)]
pub struct Users {
    hasher: hashbrown::DefaultHashBuilder,
    shards: Box<[RwLock<Shard>]>,
}

impl Default for Users {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl Clone for Users {
    fn clone(&self) -> Self {
        Self {
            hasher: self.hasher.clone(),
            shards: self
                .shards
                .iter()
                .map(|shard| RwLock::new(read(shard).clone()))
                .collect(),
        }
    }
}

fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    fn find(&self, hash: u64, id: UserId) -> Option<usize> {
        let accounts = &self.accounts;
        self.slots
            .find(hash, |slot| accounts[*slot as usize].id == id)
            .map(|slot| *slot as usize)
    }
}

impl Users {
    /// Room for `users` without growing (a snapshot knows how many it holds).
    pub fn with_capacity(users: usize) -> Self {
        let per_shard = users.div_ceil(SHARDS);
        let per_shard = per_shard + per_shard / 32;
        Self {
            hasher: hashbrown::DefaultHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        accounts: Vec::with_capacity(per_shard),
                        slots: HashTable::with_capacity(per_shard),
                    })
                })
                .collect(),
        }
    }

    fn locate(&self, id: UserId) -> (u64, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(id);
        // Bits the table's own probing does not use (it takes the low ones and the top seven).
        let shard = (hash >> 32) as usize % SHARDS;
        (hash, &self.shards[shard])
    }

    pub fn get<R>(&self, id: UserId, look: impl FnOnce(&Account) -> R) -> Option<R> {
        let (hash, shard) = self.locate(id);
        let shard = read(shard);
        shard.find(hash, id).map(|slot| look(&shard.accounts[slot]))
    }

    /// Changes the account, if there is one; whether there was.
    pub fn update(&self, id: UserId, change: impl FnOnce(&mut Account)) -> bool {
        let (hash, shard) = self.locate(id);
        let mut shard = write(shard);
        match shard.find(hash, id) {
            Some(slot) => {
                change(&mut shard.accounts[slot]);
                true
            }
            None => false,
        }
    }

    /// Adds the account, or replaces the one with its id.
    pub fn insert(&self, account: Account) {
        let id = account.id;
        let (hash, shard) = self.locate(id);
        let mut guard = write(shard);
        if let Some(slot) = guard.find(hash, id) {
            guard.accounts[slot] = account;
            return;
        }
        self.push(&mut guard, hash, account);
    }

    /// Adds an account whose id none has (read from a snapshot, which holds each once).
    pub fn insert_new(&self, account: Account) {
        let (hash, shard) = self.locate(account.id);
        self.push(&mut write(shard), hash, account);
    }

    fn push(&self, shard: &mut Shard, hash: u64, account: Account) {
        let slot = u32::try_from(shard.accounts.len()).unwrap_or(u32::MAX);
        // Grown by a quarter rather than doubled: at most a quarter of the vector is slack.
        if shard.accounts.len() == shard.accounts.capacity() {
            let more = (shard.accounts.capacity() / 4).max(64);
            shard.accounts.reserve_exact(more);
        }
        shard.accounts.push(account);
        let hasher = &self.hasher;
        let accounts = &shard.accounts;
        shard.slots.insert_unique(hash, slot, |slot| {
            hasher.hash_one(accounts[*slot as usize].id)
        });
    }

    pub fn remove(&self, id: UserId) -> Option<Account> {
        let (hash, shard) = self.locate(id);
        let mut guard = write(shard);
        let shard = &mut *guard;
        let accounts = &shard.accounts;
        let entry = shard
            .slots
            .find_entry(hash, |slot| accounts[*slot as usize].id == id)
            .ok()?;
        let (slot, _) = entry.remove();
        let slot = slot as usize;
        let last = shard.accounts.len() - 1;
        let account = shard.accounts.swap_remove(slot);
        if slot != last {
            // The last account moved into the freed slot: its index entry follows it.
            let moved = self.hasher.hash_one(shard.accounts[slot].id);
            if let Some(index) = shard.slots.find_mut(moved, |index| *index as usize == last) {
                *index = slot as u32;
            }
        }
        Some(account)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| read(shard).accounts.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every account, one shard at a time (each shard read-locked while visited).
    pub fn for_each(&self, mut visit: impl FnMut(&Account)) {
        for shard in self.shards.iter() {
            for account in &read(shard).accounts {
                visit(account);
            }
        }
    }

    /// Takes `other`'s accounts in place of these (this value's views then see them).
    pub fn replace_with(&self, other: Users) {
        for shard in self.shards.iter() {
            *write(shard) = Shard::default();
        }
        for shard in other.shards.into_vec() {
            let shard = shard.into_inner().unwrap_or_else(PoisonError::into_inner);
            for account in shard.accounts {
                self.insert(account);
            }
        }
    }
}

/// The email→user index, for the directory's owner: user ids in a table hashed by the
/// canonical address, compared through the accounts (the address is stored once).
#[derive(Debug, Clone, Default)]
pub struct EmailIndex {
    hasher: RandomState,
    ids: HashTable<UserId>,
}

/// The form lookups use of an address read from the log ([`Email::canonical`]); ASCII
/// addresses already have it, without a copy.
fn canonical(stored: &str) -> std::borrow::Cow<'_, str> {
    if stored.is_ascii() {
        std::borrow::Cow::Borrowed(stored)
    } else {
        std::borrow::Cow::Owned(
            Email::from_record(stored.to_owned())
                .canonical()
                .as_str()
                .to_owned(),
        )
    }
}

impl EmailIndex {
    pub fn with_capacity(users: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            ids: HashTable::with_capacity(users),
        }
    }

    fn matches(users: &Users, id: UserId, email: &str) -> bool {
        users
            .get(id, |account| {
                canonical(account.credentials.email()) == email
            })
            .unwrap_or(false)
    }

    /// The user indexed under `email` (in canonical form).
    pub fn get(&self, users: &Users, email: &str) -> Option<UserId> {
        let hash = self.hasher.hash_one(email);
        self.ids
            .find(hash, |id| Self::matches(users, *id, email))
            .copied()
    }

    /// Indexes `id` (already in `users`) under its address's canonical form, in place of any
    /// other user indexed there.
    pub fn insert(&mut self, users: &Users, id: UserId, email: &str) {
        let hash = self.hasher.hash_one(email);
        match self
            .ids
            .find_mut(hash, |other| Self::matches(users, *other, email))
        {
            Some(other) => *other = id,
            None => self.insert_new(users, id, hash),
        }
    }

    /// The hash `id`'s entry takes for an address as stored (its canonical form's).
    pub fn hash_of(&self, stored: &str) -> u64 {
        self.hasher.hash_one(canonical(stored).as_ref())
    }

    /// Indexes `id` under the address [`EmailIndex::hash_of`] hashed, which no one is indexed
    /// under (read from a snapshot, which flags one account per address).
    pub fn insert_new(&mut self, users: &Users, id: UserId, hash: u64) {
        let hasher = &self.hasher;
        self.ids.insert_unique(hash, id, |id| {
            users
                .get(*id, |account| {
                    hasher.hash_one(canonical(account.credentials.email()).as_ref())
                })
                .unwrap_or_default()
        });
    }

    /// Removes whoever is indexed under `email` (call while that account is still in `users`).
    pub fn remove(&mut self, users: &Users, email: &str) {
        let hash = self.hasher.hash_one(email);
        if let Ok(entry) = self
            .ids
            .find_entry(hash, |id| Self::matches(users, *id, email))
        {
            entry.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn ids(&self) -> impl Iterator<Item = &UserId> {
        self.ids.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u32) -> Account {
        Account {
            id: UserId::new(),
            credentials: Credentials::new(
                &format!("u{n}@example.com"),
                "$2b$12$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq",
            ),
            created_at: Utc::now(),
            last_login_at: None,
            version: 1,
            disabled: false,
            logins: 0,
            rare: None,
        }
    }

    #[test]
    fn credentials_keep_the_email_and_the_hash_exactly() {
        for hash in [
            "$2b$12$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq",
            "$2y$04$LzWU7dbBVNzKLoC3cZF4a.oQBRpmGT0V1pAAGqp3kVlUK6nDr2/1e",
            "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
            // Not packable: another form, or trailing bits set, or short.
            "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
            "$2b$12$abcdefghijklmnopqrstuvJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq",
            "$2b$04$x",
            "",
        ] {
            let credentials = Credentials::new("ü@example.com", hash);
            assert_eq!(credentials.email(), "ü@example.com");
            assert_eq!(credentials.password_hash().as_str(), hash);
        }
        let packed = Credentials::new(
            "a@example.com",
            "$2b$12$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq",
        );
        assert_eq!(packed.0.len(), 1 + 13 + 1 + 41);
    }

    #[test]
    fn accounts_are_found_changed_and_removed_whatever_moves() {
        let users = Users::default();
        let accounts: Vec<Account> = (0..2000).map(account).collect();
        for account in &accounts {
            users.insert(account.clone());
        }
        assert_eq!(users.len(), 2000);
        for (n, account) in accounts.iter().enumerate() {
            if n % 3 == 0 {
                assert_eq!(users.remove(account.id).as_ref(), Some(account));
            }
        }
        for (n, account) in accounts.iter().enumerate() {
            let found = users.get(account.id, Clone::clone);
            assert_eq!(found.as_ref(), (n % 3 != 0).then_some(account));
        }
        assert!(users.update(accounts[1].id, |account| account.logins = 7));
        assert_eq!(users.get(accounts[1].id, |account| account.logins), Some(7));
        assert!(!users.update(accounts[0].id, |_| ()));

        let mut index = EmailIndex::default();
        for account in &accounts[1..] {
            index.insert(&users, account.id, account.credentials.email());
        }
        assert_eq!(index.get(&users, "u1@example.com"), Some(accounts[1].id));
        assert_eq!(index.get(&users, "u3@example.com"), None);
        index.remove(&users, "u1@example.com");
        assert_eq!(index.get(&users, "u1@example.com"), None);
        assert_eq!(index.get(&users, "u2@example.com"), Some(accounts[2].id));
    }
}
