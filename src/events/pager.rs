//! The one way to walk the log: page by page, in position order, from any position, stopping
//! early when the caller says so. Start-up replay, catch-up, `verify`, `events` and `replay` all
//! read through it, decoded ([`RecordedEvent`]) or as stored ([`ChainedRow`]).

use std::marker::PhantomData;
use std::ops::ControlFlow;

use super::chain::ChainedRow;
use super::signed::Linked;
use super::{EventStore, RecordedEvent, StoreError, StoreFuture};

/// Events are read in pages of this many, so a long log never needs to fit in one reply.
pub const READ_PAGE: usize = 10_000;

/// What a page holds: something with a position that a store can read after a position.
pub trait Paged: Sized + Send + 'static {
    fn position(&self) -> i64;
    fn read(store: &dyn EventStore, after: i64, limit: usize) -> StoreFuture<'_, Vec<Self>>;
}

impl Paged for RecordedEvent {
    fn position(&self) -> i64 {
        self.position
    }

    fn read(store: &dyn EventStore, after: i64, limit: usize) -> StoreFuture<'_, Vec<Self>> {
        store.read_after(after, limit)
    }
}

impl Paged for Linked {
    fn position(&self) -> i64 {
        self.event.position
    }

    fn read(store: &dyn EventStore, after: i64, limit: usize) -> StoreFuture<'_, Vec<Self>> {
        store.read_linked_after(after, limit)
    }
}

impl Paged for ChainedRow {
    fn position(&self) -> i64 {
        self.columns.position
    }

    fn read(store: &dyn EventStore, after: i64, limit: usize) -> StoreFuture<'_, Vec<Self>> {
        store.read_rows_after(after, limit)
    }
}

/// A cursor over the log after a position.
pub struct Pager<'s, T> {
    store: &'s dyn EventStore,
    after: i64,
    page_size: usize,
    done: bool,
    _rows: PhantomData<fn() -> T>,
}

/// Decoded events after `after`.
pub fn events_after(store: &dyn EventStore, after: i64) -> Pager<'_, RecordedEvent> {
    Pager::new(store, after)
}

/// Decoded events with their links and signatures, after `after`: what a reader checking the
/// log's signatures reads.
pub fn linked_after(store: &dyn EventStore, after: i64) -> Pager<'_, Linked> {
    Pager::new(store, after)
}

/// Rows exactly as stored, with their chain links, after `after`.
pub fn rows_after(store: &dyn EventStore, after: i64) -> Pager<'_, ChainedRow> {
    Pager::new(store, after)
}

/// `work` over a page, the second half of a long one on the blocking pool meanwhile: what a
/// reader does to a page it read (parse, hash, open, decode) then takes both cores, while the
/// store's own thread, or the database, reads the next.
pub(crate) async fn in_halves<T, U>(
    mut items: Vec<T>,
    work: impl Fn(Vec<T>) -> Result<Vec<U>, StoreError> + Clone + Send + 'static,
) -> Result<Vec<U>, StoreError>
where
    T: Send + 'static,
    U: Send + 'static,
{
    const ALONE: usize = 1024;
    if items.len() < ALONE {
        return work(items);
    }
    let second = items.split_off(items.len() / 2);
    let other = tokio::task::spawn_blocking({
        let work = work.clone();
        move || work(second)
    });
    let mut done = work(items)?;
    done.extend(other.await.map_err(StoreError::unavailable)??);
    Ok(done)
}

impl<'s, T: Paged> Pager<'s, T> {
    pub fn new(store: &'s dyn EventStore, after: i64) -> Self {
        Self {
            store,
            after,
            page_size: READ_PAGE,
            done: false,
            _rows: PhantomData,
        }
    }

    /// Reads `size` rows per page instead of [`READ_PAGE`].
    pub fn page_size(mut self, size: usize) -> Self {
        self.page_size = size.max(1);
        self
    }

    /// The next page, or `None` once the log has been read to its end. A short page is the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = T::read(self.store, self.after, self.page_size).await?;
        self.done = page.len() < self.page_size;
        match page.last() {
            Some(last) => {
                self.after = last.position();
                Ok(Some(page))
            }
            None => Ok(None),
        }
    }

    /// Hands every row to `visit`, in position order, until the end of the log or until `visit`
    /// breaks. Returns how many rows were visited.
    ///
    /// The next page is asked for before this one is visited: a store that reads on a thread of
    /// its own (the embedded one: reading, parsing and opening sealed values) prepares it while
    /// the caller folds this one, so a replay takes about the longer of the two, not their sum.
    /// A visit that breaks leaves that read unused.
    pub async fn for_each(
        mut self,
        mut visit: impl FnMut(T) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        let mut visited = 0;
        let mut pending = (!self.done).then(|| T::read(self.store, self.after, self.page_size));
        while let Some(read) = pending.take() {
            let page = read.await?;
            self.done = page.len() < self.page_size;
            let Some(last) = page.last() else {
                break;
            };
            self.after = last.position();
            if !self.done {
                pending = Some(T::read(self.store, self.after, self.page_size));
            }
            for row in page {
                visited += 1;
                if visit(row).is_break() {
                    return Ok(visited);
                }
            }
        }
        self.done = true;
        Ok(visited)
    }

    /// Every remaining row, in one `Vec` (for short tails, such as a catch-up).
    pub async fn collect(mut self) -> Result<Vec<T>, StoreError> {
        let mut rows = Vec::new();
        while let Some(page) = self.next_page().await? {
            rows.extend(page);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, PasswordHash, UserId};
    use crate::events::{
        Event, EventMetadata, InMemoryEventStore, LoginSucceeded, NewEvent, UserRegistered,
    };

    async fn store_with(events: usize) -> InMemoryEventStore {
        let store = InMemoryEventStore::new();
        let user = UserId::new();
        let mut batch = vec![NewEvent {
            stream_version: 1,
            event: Event::UserRegistered(UserRegistered {
                user_id: user,
                email: Email::parse("a@example.com").expect("valid"),
                password_hash: PasswordHash::new("$2b$04$x".to_owned()),
                imported: None,
            }),
            metadata: EventMetadata::default(),
        }];
        for version in 2..=events {
            batch.push(NewEvent {
                stream_version: i32::try_from(version).expect("small"),
                event: Event::LoginSucceeded(LoginSucceeded { user_id: user }),
                metadata: EventMetadata::default(),
            });
        }
        store.append(batch).await.expect("appends");
        store
    }

    #[tokio::test]
    async fn pages_cover_the_log_once_in_order_whatever_the_page_size() {
        let store = store_with(7).await;
        for size in [1, 2, 3, 7, 8, 100] {
            let mut pager = events_after(&store, 0).page_size(size);
            let mut positions = Vec::new();
            let mut pages = 0;
            while let Some(page) = pager.next_page().await.expect("reads") {
                pages += 1;
                positions.extend(page.iter().map(|e| e.position));
            }
            assert_eq!(positions, (1..=7).collect::<Vec<_>>(), "page size {size}");
            assert!(
                pages <= 7usize.div_ceil(size) + 1,
                "page size {size}: {pages}"
            );
        }
    }

    #[tokio::test]
    async fn for_each_reading_ahead_visits_every_row_once_in_order() {
        let store = store_with(7).await;
        for size in [1, 2, 3, 6, 7, 8, 100] {
            let mut positions = Vec::new();
            let visited = events_after(&store, 0)
                .page_size(size)
                .for_each(|event| {
                    positions.push(event.position);
                    ControlFlow::Continue(())
                })
                .await
                .expect("reads");
            assert_eq!(visited, 7, "page size {size}");
            assert_eq!(positions, (1..=7).collect::<Vec<_>>(), "page size {size}");
        }
        let nothing = events_after(&store, 7)
            .for_each(|_| ControlFlow::Continue(()))
            .await
            .expect("reads");
        assert_eq!(nothing, 0);
    }

    #[tokio::test]
    async fn for_each_stops_early_and_starts_after_a_position() {
        let store = store_with(7).await;
        let mut seen = Vec::new();
        let visited = rows_after(&store, 2)
            .page_size(2)
            .for_each(|row| {
                seen.push(row.columns.position);
                if row.columns.position == 5 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
            .expect("reads");
        assert_eq!((visited, seen), (3, vec![3, 4, 5]));
        let tail = events_after(&store, 6).collect().await.expect("reads");
        assert_eq!(tail.len(), 1);
    }
}
