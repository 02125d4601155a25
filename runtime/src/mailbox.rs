//! A bounded multi-producer mailbox that belongs to a slot, not to an actor instance.
//!
//! Invariants:
//! - Any task may consume, one at a time: each new instance of the actor picks up where the last one
//!   stopped, so nothing queued is lost across a restart (the paper's stall proxy).
//! - Producers push to `inner.queue`; the consumer moves the whole queue into `local` with one lock
//!   and then pops from `local`, so producers and the consumer rarely contend. Both halves live in
//!   the mailbox: an aborted consumer loses nothing.
//! - `inner.in_local` counts the messages of `local` not yet reported as taken; the consumer reports
//!   (under `inner`) every `REPORT_EVERY` messages and whenever it next finds `local` empty. So producers, which
//!   check `queue.len() + in_local` under `inner`, never exceed the capacity, and the consumer
//!   touches `inner` once per `REPORT_EVERY` messages rather than once per message.
//! - `push_front` (redelivery of an in-flight idempotent message) ignores the capacity: the message
//!   already held a place.
//! - Once closed, nothing is accepted and `close` hands back everything still queued, so that every
//!   asker gets an answer.
//! - Lock order: `local` before `inner` (rule 1 of the complete list in `sync.rs`).

use std::collections::VecDeque;
use std::fmt;
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

/// The consumer's half and the producers' half are kept at least 128 bytes apart (adjacent-line
/// prefetch pairs 64-byte lines), so that they never share a cache line: the consumer locks
/// `local` for every message, producers lock `inner`. Apart, not aligned: a 128-byte-aligned
/// mailbox made every slot 128-aligned (rounded up to a multiple of 128 and allocated with
/// `posix_memalign`), 475 bytes more per idle actor. What lies between them, `middle`, is the
/// owner's: an empty [`Gap`], or (a slot's) fields that neither side writes on its path, so that
/// the separation costs no memory of its own.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Mailbox<T, M = Gap> {
    local: Mutex<Local<T>>,
    middle: M,
    inner: Mutex<Inner<T>>,
    capacity: usize,
}

/// 128 bytes that nothing reads or writes.
pub(crate) struct Gap(#[expect(dead_code, reason = "only its size matters")] [u8; 128]);

impl fmt::Debug for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gap")
    }
}

/// How many taken messages the consumer may leave unreported (they still count as queued).
const REPORT_EVERY: usize = 32;

/// Batches smaller than this make the consumer yield once before taking them.
const YIELD_BELOW: usize = 8;

#[derive(Debug)]
struct Local<T> {
    queue: VecDeque<T>,
    /// Taken since the last report to `inner.in_local`.
    unreported: usize,
    /// The consumer let the producers run once before taking a small batch.
    yielded: bool,
}

#[derive(Debug)]
struct Inner<T> {
    queue: VecDeque<T>,
    /// The consumer, parked on an empty mailbox.
    consumer: Option<Waker>,
    /// Producers parked on a full mailbox.
    /// Boxed while any waits: a full mailbox is rare (8 bytes in every mailbox, not 24).
    #[expect(clippy::box_collection, reason = "8 bytes in every mailbox instead of a Vec's 24")]
    producers: Option<Box<Vec<Waker>>>,
    /// Size of the batch in `local` until it is used up.
    in_local: usize,
    /// The last item pushed came from a sender that now waits for it (see `try_push_waiting`).
    sender_waits: bool,
    closed: bool,
}

impl<T> Mailbox<T> {
    /// A mailbox whose halves an empty gap keeps apart.
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with_middle(capacity, Gap([0; 128]))
    }
}

impl<T, M> Mailbox<T, M> {
    /// A mailbox whose halves `middle` keeps apart: at least 128 bytes (checked at compile time)
    /// that neither the consumer nor the producers write on their paths.
    pub(crate) fn with_middle(capacity: usize, middle: M) -> Self {
        const { assert!(std::mem::size_of::<M>() >= 128, "the halves must be 128 bytes apart") };
        Mailbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                consumer: None,
                producers: None,
                in_local: 0,
                sender_waits: false,
                closed: false,
            }),
            middle,
            local: Mutex::new(Local {
                queue: VecDeque::new(),
                unreported: 0,
                yielded: false,
            }),
            capacity: capacity.max(1),
        }
    }

    /// How many messages it holds at most.
    #[cfg_attr(not(feature = "observer"), allow(dead_code))]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// What lies between the halves.
    pub(crate) fn middle(&self) -> &M {
        &self.middle
    }

    pub(crate) fn len(&self) -> usize {
        let local = self.local.lock();
        local.queue.len() + self.inner.lock().queue.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Pushes without waiting.
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        self.push_or_park(item, None, false)
    }

    /// Pushes without waiting, for a sender that then waits for the item to be handled (an ask):
    /// it sends nothing more meanwhile, so the consumer takes the item at once instead of yielding
    /// to let a batch build up.
    pub(crate) fn try_push_waiting(&self, item: T) -> Result<(), PushError<T>> {
        self.push_or_park(item, None, true)
    }

    fn push_or_park(&self, item: T, cx: Option<&mut Context<'_>>, waits: bool) -> Result<(), PushError<T>> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(PushError::Closed(item));
        }
        if inner.queue.len() + inner.in_local >= self.capacity {
            if let Some(cx) = cx
                && !inner
                    .producers
                    .iter()
                    .flat_map(|p| p.iter())
                    .any(|w| w.will_wake(cx.waker()))
            {
                inner
                    .producers
                    .get_or_insert_with(Box::default)
                    .push(cx.waker().clone());
            }
            return Err(PushError::Full(item));
        }
        if inner.queue.capacity() == 0 {
            // Room for one: an actor that gets a message now and then keeps one envelope's
            // buffer while idle (a first push would take room for four); bursts grow it.
            inner.queue.reserve_exact(1);
        }
        inner.queue.push_back(item);
        inner.sender_waits = waits;
        let consumer = inner.consumer.take();
        drop(inner);
        if let Some(w) = consumer {
            w.wake();
        }
        Ok(())
    }

    /// Makes `waker` the consumer's if nothing is queued and the mailbox is open (the actor
    /// hibernates: the next push, close or `wake_consumer` wakes `waker`). Whether it did. The
    /// queue's buffer goes too (the one an idle consumer keeps for the next push, about 600 B at
    /// this runtime's envelope size): a hibernating actor holds no queue memory, and its next
    /// message, which spawns a task anyway, allocates a buffer again.
    pub(crate) fn park_consumer(&self, waker: &Waker) -> bool {
        let mut local = self.local.lock();
        let mut inner = self.inner.lock();
        if inner.closed || !local.queue.is_empty() || !inner.queue.is_empty() {
            return false;
        }
        local.queue = VecDeque::new();
        inner.queue = VecDeque::new();
        Self::report(&mut local, &mut inner);
        local.yielded = false;
        inner.consumer = Some(waker.clone());
        true
    }

    /// Wakes the consumer, if it is parked, so that it looks at its flags again.
    pub(crate) fn wake_consumer(&self) {
        let consumer = self.inner.lock().consumer.take();
        if let Some(w) = consumer {
            w.wake();
        }
    }

    /// Pushes, waiting for room until `deadline`; `Full` when the deadline came first.
    pub(crate) async fn push_until(&self, item: T, deadline: Instant, clock: &Clock) -> Result<(), PushError<T>> {
        let mut item = match self.try_push(item) {
            Err(PushError::Full(item)) => Some(item),
            other => return other,
        };
        let mut sleep = pin!(clock.sleep_until(deadline));
        poll_fn(|cx| {
            let it = item.take().expect("polled after completion");
            match self.push_or_park(it, Some(cx), false) {
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
        let mut local = self.local.lock();
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(item);
        }
        local.queue.push_front(item);
        inner.in_local += 1;
        let consumer = inner.consumer.take();
        drop(inner);
        drop(local);
        if let Some(w) = consumer {
            w.wake();
        }
        Ok(())
    }

    /// Takes the next item from `local`, refilling it from the producers' queue when empty.
    /// `Err(closed)` when there is nothing.
    fn take(&self, cx: Option<&mut Context<'_>>) -> Result<T, bool> {
        let mut local = self.local.lock();
        if let Some(item) = local.queue.pop_front() {
            local.unreported += 1;
            if local.unreported >= REPORT_EVERY {
                Self::report(&mut local, &mut self.inner.lock());
            }
            return Ok(item);
        }
        let mut inner = self.inner.lock();
        Self::report(&mut local, &mut inner);
        // A small batch while producers are active: let them run once more first, so that the
        // consumer takes batches instead of contending for every message.
        if let Some(cx) = cx.as_ref() {
            let n = inner.queue.len();
            if n > 0 && n < YIELD_BELOW && !local.yielded && !inner.sender_waits {
                local.yielded = true;
                cx.waker().wake_by_ref();
                return Err(false);
            }
        }
        local.yielded = false;
        let Some(item) = inner.queue.pop_front() else {
            // Idle: hold one buffer, for the producers' next push. After its first messages
            // every actor kept two (the batch swapped out and the producers'), about 600 B
            // each at this runtime's envelope size, for as long as it stayed idle; freeing both
            // cost an allocation per message of an ask round trip (+6% instructions), keeping
            // the one the next push uses costs nothing.
            if local.queue.capacity() > 0 {
                if inner.queue.capacity() == 0 {
                    std::mem::swap(&mut inner.queue, &mut local.queue);
                } else {
                    local.queue = VecDeque::new();
                }
            }
            if let Some(cx) = cx
                && !inner.consumer.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.consumer = Some(cx.waker().clone());
            }
            return Err(inner.closed);
        };
        std::mem::swap(&mut inner.queue, &mut local.queue);
        // The item taken now is reported at once; the rest of the batch stays counted.
        inner.in_local += local.queue.len();
        Ok(item)
    }

    /// Frees the places of the messages taken since the last report; parked producers retry.
    fn report(local: &mut Local<T>, inner: &mut Inner<T>) {
        inner.in_local -= local.unreported;
        local.unreported = 0;
        // Only the rare full-mailbox path pays for this. Waking while holding the lock is fine:
        // a woken task runs only after we return.
        if let Some(producers) = inner.producers.take() {
            producers.into_iter().for_each(Waker::wake);
        }
    }

    /// Takes the next item; `None` once the mailbox is closed.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.take(Some(cx)) {
            Ok(item) => Poll::Ready(Some(item)),
            Err(true) => Poll::Ready(None),
            Err(false) => Poll::Pending,
        }
    }

    /// Takes the next item if there is one.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.take(None).ok()
    }

    pub(crate) async fn pop(&self) -> Option<T> {
        poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// Accepts messages again after a `close` (a child terminated by its supervisor and then
    /// restarted by hand keeps its mailbox, and so its refs).
    pub(crate) fn reopen(&self) {
        self.inner.lock().closed = false;
    }

    /// Closes the mailbox if nothing is queued in it (an entity's passivation): every later push
    /// fails `Closed`, so a message sent meanwhile goes elsewhere instead of being lost. Whether
    /// it closed it.
    pub(crate) fn close_if_empty(&self) -> bool {
        let local = self.local.lock();
        let mut inner = self.inner.lock();
        if inner.closed || !local.queue.is_empty() || !inner.queue.is_empty() {
            return false;
        }
        inner.closed = true;
        let consumer = inner.consumer.take();
        drop(inner);
        drop(local);
        if let Some(w) = consumer {
            w.wake();
        }
        true
    }

    /// Closes the mailbox and returns what was still queued.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut local = self.local.lock();
        let mut inner = self.inner.lock();
        inner.closed = true;
        let left: Vec<T> = local.queue.drain(..).chain(inner.queue.drain(..)).collect();
        local.unreported = 0;
        inner.in_local = 0;
        let consumer = inner.consumer.take();
        let producers = inner.producers.take().map(|p| *p).unwrap_or_default();
        drop(inner);
        drop(local);
        consumer.into_iter().chain(producers).for_each(Waker::wake);
        left
    }
}

/// Where the consumer's half of a `Mailbox<T, M>` ends and the producers' half begins (tests).
#[cfg(all(test, not(crashonly_loom)))]
pub(crate) fn halves<T, M>() -> (usize, usize) {
    (
        std::mem::offset_of!(Mailbox<T, M>, local) + std::mem::size_of::<Mutex<Local<T>>>(),
        std::mem::offset_of!(Mailbox<T, M>, inner),
    )
}

#[cfg(all(test, not(crashonly_loom)))]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_consumers_half_and_the_producers_half_never_share_a_cache_line_pair() {
        let (local_end, inner) = super::halves::<u64, super::Gap>();
        assert!(
            inner >= local_end + 128,
            "local ends at {local_end}, inner begins at {inner}"
        );
        assert!(std::mem::align_of::<Mailbox<u64>>() <= 16);
    }

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

    #[tokio::test(start_paused = true)]
    async fn batches_never_exceed_capacity_and_reports_wake_producers() {
        let clock = Clock::default();
        let mb = std::sync::Arc::new(Mailbox::new(4));
        for i in 0..4 {
            mb.try_push(i).unwrap();
        }
        assert_eq!(mb.pop().await, Some(0)); // takes the batch [1, 2, 3]
        mb.try_push(4).unwrap(); // the taken one freed its place
        assert!(matches!(mb.try_push(5), Err(PushError::Full(5))));
        let (m2, deadline) = (mb.clone(), clock.now() + std::time::Duration::from_secs(1));
        let waiting = tokio::spawn(async move { m2.push_until(5, deadline, &Clock::default()).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(mb.pop().await.unwrap());
        }
        assert!(waiting.await.unwrap());
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert_eq!(mb.len(), 0);
    }

    #[tokio::test]
    async fn an_idle_mailbox_holds_one_buffer() {
        let mb = Mailbox::new(8);
        for round in 0..3 {
            for i in 0..5 {
                mb.try_push(round * 10 + i).unwrap();
            }
            for i in 0..5 {
                assert_eq!(mb.try_pop(), Some(round * 10 + i));
            }
            assert_eq!(mb.try_pop(), None);
            // One buffer, the producers' (for the next push), none in the batch.
            let (local, inner) = (mb.local.lock(), mb.inner.lock());
            assert_eq!(local.queue.capacity(), 0, "round {round}");
            assert!(inner.queue.capacity() > 0, "round {round}");
            assert!(inner.producers.is_none(), "round {round}");
        }
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

/// Model-checked with loom: `RUSTFLAGS="--cfg crashonly_loom" cargo test -p crashonly --lib loom`.
#[cfg(all(test, crashonly_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;
    use std::sync::Arc;

    /// Two producers and a consumer: every accepted message is taken exactly once, in each
    /// producer's order, and the queue never holds more than its capacity.
    #[test]
    fn loom_no_message_lost_or_duplicated_and_capacity_holds() {
        model(|| {
            let mb = Arc::new(Mailbox::new(2));
            let producer = |base: u32, mb: Arc<Mailbox<u32>>| {
                loom::thread::spawn(move || (base..base + 2).filter(|i| mb.try_push(*i).is_ok()).collect::<Vec<_>>())
            };
            let p1 = producer(0, mb.clone());
            let p2 = producer(10, mb.clone());
            let mut got = Vec::new();
            for _ in 0..2 {
                assert!(mb.len() <= 2);
                got.extend(mb.try_pop());
            }
            let mut sent = p1.join().unwrap();
            sent.extend(p2.join().unwrap());
            while let Some(x) = mb.try_pop() {
                got.push(x);
            }
            let mut sorted = got.clone();
            sorted.sort_unstable();
            sent.sort_unstable();
            assert_eq!(sorted, sent, "taken exactly what was accepted");
            for base in [0, 10] {
                let mine: Vec<_> = got.iter().filter(|x| (base..base + 10).contains(*x)).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-producer order: {got:?}");
            }
        });
    }

    /// A redelivered message goes first; closing hands back everything not taken: nothing is
    /// both taken and handed back, nothing is neither.
    #[test]
    fn loom_redelivery_and_close_account_for_every_message() {
        model(|| {
            let mb = Arc::new(Mailbox::new(4));
            mb.try_push(1).unwrap();
            let producer = {
                let mb = mb.clone();
                loom::thread::spawn(move || mb.try_push(2).is_ok())
            };
            let redeliver = {
                let mb = mb.clone();
                loom::thread::spawn(move || mb.push_front(0).is_ok())
            };
            let first = mb.try_pop();
            let pushed = producer.join().unwrap();
            let redelivered = redeliver.join().unwrap();
            let left = mb.close();
            let mut all: Vec<u32> = first.into_iter().chain(left).collect();
            all.sort_unstable();
            let mut expect = vec![1];
            if pushed {
                expect.push(2);
            }
            if redelivered {
                expect.push(0);
            }
            expect.sort_unstable();
            assert_eq!(all, expect);
            assert!(mb.try_push(9).is_err(), "closed");
        });
    }

    /// A consumer parked on an empty mailbox is woken by a push (no lost wake-up), including
    /// through the yield it takes before a small batch.
    #[test]
    fn loom_a_parked_consumer_is_woken() {
        model(|| {
            let mb = Arc::new(Mailbox::new(2));
            let consumer = {
                let mb = mb.clone();
                loom::thread::spawn(move || loom::future::block_on(mb.pop()))
            };
            mb.try_push(7).unwrap();
            assert_eq!(consumer.join().unwrap(), Some(7));
        });
    }
}
