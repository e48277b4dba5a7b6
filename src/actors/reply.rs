//! A message reply whose work stops as soon as its caller stops waiting.
//!
//! actix runs a handler's future to completion even after the sender has given up (an HTTP
//! client that disconnected, a `send` that timed out). [`Cancellable`] runs the future as a task
//! of its own and drops it the moment the caller's end of the reply channel closes, so work that
//! has not started yet (waiting for a turn, waiting for a bcrypt slot) never starts.

use std::future::Future;
use std::pin::{Pin, pin};

use actix::Actor;
use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::Message;
use futures_util::future::{Either, select};

pub struct Cancellable<T>(Pin<Box<dyn Future<Output = T>>>);

impl<T> Cancellable<T> {
    pub fn new(work: impl Future<Output = T> + 'static) -> Self {
        Self(Box::pin(work))
    }
}

impl<A, M> MessageResponse<A, M> for Cancellable<M::Result>
where
    A: Actor,
    M: Message,
    M::Result: 'static,
{
    fn handle(self, _ctx: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        let work = self.0;
        // A task of its own, not an item of the actor's context: while it waits it costs the
        // actor nothing.
        actix::spawn(async move {
            let Some(mut tx) = tx else {
                // `do_send`: nobody is waiting for the answer, but the work was asked for.
                work.await;
                return;
            };
            let result = {
                let closed = pin!(tx.closed());
                match select(work, closed).await {
                    Either::Left((result, _)) => Some(result),
                    Either::Right(_) => None,
                }
            };
            if let Some(result) = result {
                let _ = tx.send(result);
            }
        });
    }
}
