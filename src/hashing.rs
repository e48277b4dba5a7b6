//! bcrypt on a bounded blocking pool, so password work never runs on an actor or HTTP worker.

use crate::metrics::METRICS;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::{Password, PasswordHash};

/// Hashes and verifies passwords on tokio's blocking pool, at most `parallelism` at a time.
///
/// The semaphore queues work fairly (FIFO) instead of starting hundreds of threads that would
/// share the cores anyway: with one permit per core, a login waits in line rather than slowing
/// every other login down.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    permits: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the hashing task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

impl PasswordHasher {
    /// `cost` is bcrypt's work factor (4 to 31); `parallelism` is usually the number of cores.
    pub fn new(cost: u32, parallelism: usize) -> Self {
        Self {
            cost,
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
        }
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
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, run unthrottled
        // rather than refuse logins.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
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
    async fn dummy_hash_has_the_configured_cost() {
        let hasher = PasswordHasher::new(5, 1);
        let dummy = hasher.dummy_hash().await.expect("hash");
        assert!(dummy.as_str().starts_with("$2b$05$"));
    }
}
