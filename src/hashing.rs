//! bcrypt on a bounded blocking pool, so password work never runs on an actor or HTTP worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::metrics::METRICS;

use crate::domain::{Password, PasswordHash};

/// Hashes and verifies passwords on tokio's blocking pool, at most `parallelism` at a time.
///
/// The semaphore queues work fairly (FIFO) instead of starting hundreds of threads that would
/// share the cores anyway: with one permit per core, a login waits in line rather than slowing
/// every other login down. The line is bounded ([`QUEUE_PER_CORE`] per core): past it a caller
/// hears [`HashError::Busy`] at once (503 with `Retry-After`) instead of waiting until it times
/// out.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    parallelism: usize,
    permits: Arc<Semaphore>,
    /// Callers waiting for a permit now.
    queued: Arc<AtomicUsize>,
}

/// Callers that may wait for a bcrypt slot, per core. At cost 12 (about 250 ms a hash) 32 per
/// core is an 8-second line, well inside the 30 s a handler waits.
pub const QUEUE_PER_CORE: usize = 32;

/// Leaves the line when dropped, however the wait ends.
struct InLine(Arc<AtomicUsize>);

impl Drop for InLine {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the hashing task did not finish")]
    Task(#[from] tokio::task::JoinError),
    /// Every bcrypt slot is taken and the line in front of them is full: retry later.
    #[error("too many password checks waiting")]
    Busy,
}

impl PasswordHasher {
    /// `cost` is bcrypt's work factor (4 to 31); `parallelism` is usually the number of cores.
    pub fn new(cost: u32, parallelism: usize) -> Self {
        let parallelism = parallelism.max(1);
        Self {
            cost,
            parallelism,
            permits: Arc::new(Semaphore::new(parallelism)),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Checks that run at once: one per core.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// A new salted hash of `password` at the configured cost.
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        let cost = self.cost;
        let hash = self
            .run("hash", move || bcrypt::hash(password.expose(), cost))
            .await??;
        Ok(PasswordHash::new(hash))
    }

    /// Whether `password` matches `hash`, in time that does not depend on where they differ.
    pub async fn verify(&self, password: Password, hash: PasswordHash) -> Result<bool, HashError> {
        Ok(self
            .run("verify", move || {
                bcrypt::verify(password.expose(), hash.as_str())
            })
            .await??)
    }

    /// Verifies `password`; if it matches and `rehash` is set, also hashes it anew at the
    /// configured cost, in the same blocking task (the plaintext is not kept any longer).
    pub async fn verify_and_rehash(
        &self,
        password: Password,
        hash: PasswordHash,
        rehash: bool,
    ) -> Result<(bool, Option<PasswordHash>), HashError> {
        let cost = self.cost;
        let (verified, rehashed) = self
            .run("verify", move || {
                let verified = bcrypt::verify(password.expose(), hash.as_str())?;
                let rehashed = if verified && rehash {
                    Some(bcrypt::hash(password.expose(), cost)?)
                } else {
                    None
                };
                Ok::<_, bcrypt::BcryptError>((verified, rehashed))
            })
            .await??;
        Ok((verified, rehashed.map(PasswordHash::new)))
    }

    /// A hash of a random password at the configured cost. Logins for unknown emails verify
    /// against it, so they take as long as logins for real users.
    pub async fn dummy_hash(&self) -> Result<PasswordHash, HashError> {
        self.hash(Password::random()).await
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let waiting = self.queued.fetch_add(1, Ordering::Relaxed);
        let in_line = InLine(Arc::clone(&self.queued));
        if waiting >= QUEUE_PER_CORE * self.parallelism {
            return Err(HashError::Busy);
        }
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, run unthrottled
        // rather than refuse logins.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        drop(in_line);
        let output = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _timer = METRICS
                .bcrypt_duration
                .with_label_values(&[operation])
                .start_timer();
            work()
        })
        .await?;
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any password bcrypt can take; the sign-up policy is not the point here.
    fn password(raw: &str) -> Password {
        Password::for_login(raw.to_owned()).expect("at most 72 bytes")
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(4, 2);
        let hash = hasher.hash(password("mypassword123")).await.expect("hash");
        assert!(hash.as_str().starts_with("$2b$04$"));
        assert!(
            hasher
                .verify(password("mypassword123"), hash.clone())
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify(password("mypassword124"), hash)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn nul_bytes_and_spaces_are_significant() {
        let hasher = PasswordHasher::new(4, 2);
        let hash = hasher.hash(password("pass\0word1")).await.expect("hash");
        assert!(
            !hasher
                .verify(password("pass\0word2"), hash.clone())
                .await
                .expect("verify")
        );
        let prefix = Password::for_login("pass".to_owned()).expect("short is fine at login");
        assert!(!hasher.verify(prefix, hash).await.expect("verify"));
        let spaced = hasher.hash(password(" password ")).await.expect("hash");
        assert!(
            !hasher
                .verify(password("password"), spaced)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn all_72_bytes_count() {
        let hasher = PasswordHasher::new(4, 2);
        let base = "a".repeat(71);
        let hash = hasher
            .hash(password(&format!("{base}b")))
            .await
            .expect("hash");
        assert!(
            !hasher
                .verify(password(&format!("{base}c")), hash)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_full_line_is_refused_at_once() {
        let hasher = PasswordHasher::new(4, 1);
        // Hold the only slot, and fill the line behind it.
        let slot = Arc::clone(&hasher.permits)
            .acquire_owned()
            .await
            .expect("the slot");
        let waiting: Vec<_> = (0..QUEUE_PER_CORE)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(password("queued-password-1")).await })
            })
            .collect();
        while hasher.queued.load(Ordering::Relaxed) < QUEUE_PER_CORE {
            tokio::task::yield_now().await;
        }
        let refused = hasher.hash(password("one-too-many-1")).await;
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
        drop(slot);
        for task in waiting {
            assert!(task.await.expect("joined").is_ok(), "the line is served");
        }
        assert_eq!(hasher.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn dummy_hash_has_the_configured_cost() {
        let hasher = PasswordHasher::new(5, 1);
        let dummy = hasher.dummy_hash().await.expect("hash");
        assert!(dummy.as_str().starts_with("$2b$05$"));
    }
}
