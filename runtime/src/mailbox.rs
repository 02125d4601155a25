//! A bounded multi-producer mailbox that belongs to a slot, not to an actor instance.
//!
//! Invariants:
//! - Any task may consume, one at a time: each new instance of the actor picks up where the last one
//!   stopped, so nothing queued is lost across a restart (the paper's stall proxy).
//! - `push_front` (redelivery of an in-flight idempotent message) ignores the capacity: the message
//!   already held a place.
//! - Once closed, nothing is accepted and `close` hands back everything still queued, so that every
//!   asker gets an answer.
//! - Wakers are woken after the lock is released.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::clock::{Clock, Instant};
use crate::sync::Mutex;

/// Why a push failed; the item comes back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

#[derive(Debug)]
pub(crate) struct Mailbox<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<T> {
    queue: VecDeque<T>,
    /// The consumer, parked on an empty queue.
    consumer: Option<Waker>,
    /// Producers parked on a full queue.
    producers: Vec<Waker>,
    closed: bool,
}

impl<T> Mailbox<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Mailbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                consumer: None,
                producers: Vec::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Pushes without waiting.
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        self.push_or_park(item, None)
    }

    fn push_or_park(&self, item: T, cx: Option<&mut Context<'_>>) -> Result<(), PushError<T>> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(PushError::Closed(item));
        }
        if inner.queue.len() >= self.capacity {
            if let Some(cx) = cx {
                if !inner.producers.iter().any(|w| w.will_wake(cx.waker())) {
                    inner.producers.push(cx.waker().clone());
                }
            }
            return Err(PushError::Full(item));
        }
        inner.queue.push_back(item);
        let consumer = inner.consumer.take();
        drop(inner);
        if let Some(w) = consumer {
            w.wake();
        }
        Ok(())
    }

    /// Pushes, waiting for room until `deadline`; `Full` when the deadline came first.
    pub(crate) async fn push_until(
        &self,
        item: T,
        deadline: Instant,
        clock: &Clock,
    ) -> Result<(), PushError<T>> {
        let mut item = match self.try_push(item) {
            Err(PushError::Full(item)) => Some(item),
            other => return other,
        };
        let mut sleep = pin!(clock.sleep_until(deadline));
        poll_fn(|cx| {
            let it = item.take().expect("polled after completion");
            match self.push_or_park(it, Some(cx)) {
                Err(PushError::Full(it)) => {
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(PushError::Full(it)));
                    }
                    item = Some(it);
                    Poll::Pending
                }
                done => Poll::Ready(done),
            }
        })
        .await
    }

    /// Puts an item back at the head of the queue (redelivery); fails only when closed.
    pub(crate) fn push_front(&self, item: T) -> Result<(), T> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(item);
        }
        inner.queue.push_front(item);
        let consumer = inner.consumer.take();
        drop(inner);
        if let Some(w) = consumer {
            w.wake();
        }
        Ok(())
    }

    /// Takes the next item; `None` once the mailbox is closed.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut inner = self.inner.lock();
        if let Some(item) = inner.queue.pop_front() {
            let producers = if inner.producers.is_empty() {
                Vec::new()
            } else {
                std::mem::take(&mut inner.producers)
            };
            drop(inner);
            // Every parked producer retries; only the rare full-mailbox path pays for this.
            producers.into_iter().for_each(Waker::wake);
            return Poll::Ready(Some(item));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        match &inner.consumer {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.consumer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes the next item if there is one.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.inner.lock().queue.pop_front()
    }

    pub(crate) async fn pop(&self) -> Option<T> {
        poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// Closes the mailbox and returns what was still queued.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let left: Vec<T> = inner.queue.drain(..).collect();
        let consumer = inner.consumer.take();
        let producers = std::mem::take(&mut inner.producers);
        drop(inner);
        consumer.into_iter().chain(producers).for_each(Waker::wake);
        left
    }
}

#[cfg(all(test, not(crashonly_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fifo_capacity_and_front() {
        let mb = Mailbox::new(2);
        mb.try_push(1).unwrap();
        mb.try_push(2).unwrap();
        assert!(matches!(mb.try_push(3), Err(PushError::Full(3))));
        assert_eq!(mb.pop().await, Some(1));
        mb.push_front(0).unwrap();
        assert_eq!(mb.len(), 2);
        assert_eq!(mb.pop().await, Some(0));
        assert_eq!(mb.pop().await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn push_until_waits_for_room_then_gives_up() {
        let clock = Clock::default();
        let mb = std::sync::Arc::new(Mailbox::new(1));
        mb.try_push(1).unwrap();
        let deadline = clock.now() + Duration::from_millis(100);
        assert!(matches!(
            mb.push_until(2, deadline, &clock).await,
            Err(PushError::Full(2))
        ));
        let mb2 = mb.clone();
        let popper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mb2.pop().await
        });
        let deadline = clock.now() + Duration::from_millis(100);
        mb.push_until(3, deadline, &clock).await.unwrap();
        assert_eq!(popper.await.unwrap(), Some(1));
        assert_eq!(mb.pop().await, Some(3));
    }

    #[tokio::test]
    async fn close_hands_back_and_refuses() {
        let mb = Mailbox::new(4);
        mb.try_push(1).unwrap();
        mb.try_push(2).unwrap();
        assert_eq!(mb.close(), vec![1, 2]);
        assert!(matches!(mb.try_push(3), Err(PushError::Closed(3))));
        assert_eq!(mb.pop().await, None);
    }
}
