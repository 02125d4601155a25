//! Messages that are not `Clone`, deferred replies, and the deadline and trace that every send
//! made while handling a message inherits.

use std::time::Duration;

use crashonly::prelude::*;
use crashonly::{ReplyPort, TraceContext};
use tokio::sync::oneshot;

// ---- a message that is not Clone: it carries a reply channel and a file handle ----

/// Not `Clone`: a oneshot sender and a file cannot be copied.
#[derive(Debug)]
struct Job {
    done: oneshot::Sender<usize>,
    file: std::fs::File,
}

struct Worker;

impl Actor for Worker {
    type Args = ();
    type Msg = Job;
    type Reply = ();
    type Error = String;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Worker)
    }

    async fn handle(&mut self, job: Job, _: &mut Context<Self>) -> Result<(), String> {
        let len = job.file.metadata().map_err(|e| e.to_string())?.len() as usize;
        let _ = job.done.send(len);
        Ok(())
    }
}

#[tokio::test]
async fn a_message_need_not_be_clone() {
    let dir = tempfile::Builder::new()
        .prefix("crashonly-noclone-")
        .tempdir()
        .unwrap()
        .keep();
    let path = dir.join("f");
    std::fs::write(&path, b"12345").unwrap();
    let system = System::new();
    let w = system.spawn(ActorSpec::<Worker>::new(())).unwrap();
    let (done, rx) = oneshot::channel();
    w.tell(Job {
        done,
        file: std::fs::File::open(&path).unwrap(),
    })
    .await
    .unwrap();
    assert_eq!(rx.await.unwrap(), 5);
    let (done, rx) = oneshot::channel();
    w.ask(Job {
        done,
        file: std::fs::File::open(&path).unwrap(),
    })
    .await
    .unwrap();
    assert_eq!(rx.await.unwrap(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- deferred replies ----

/// Answers `Slow(n)` later from a spawned task; `Fast` at once; `Drop` drops its port.
#[derive(Debug)]
enum Req {
    Slow(u64, Duration),
    Fast,
    DropPort,
}

struct Deferrer;

impl Actor for Deferrer {
    type Args = ();
    type Msg = Req;
    type Reply = u64;
    type Error = String;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Deferrer)
    }

    async fn handle(&mut self, req: Req, ctx: &mut Context<Self>) -> Result<u64, String> {
        match req {
            Req::Slow(n, after) => {
                let port = ctx.defer();
                assert!(port.is_wanted());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = port.send(n);
                });
                Ok(0) // ignored: the reply was deferred
            }
            Req::Fast => Ok(1),
            Req::DropPort => {
                drop(ctx.defer());
                Ok(0)
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_deferred_reply_does_not_block_the_mailbox() {
    let system = System::new();
    let d = system.spawn(ActorSpec::<Deferrer>::new(())).unwrap();
    let slow = {
        let d = d.clone();
        tokio::spawn(async move { d.ask(Req::Slow(42, Duration::from_millis(500))).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let t0 = tokio::time::Instant::now();
    assert_eq!(d.ask(Req::Fast).await, Ok(1), "answered while the slow one waits");
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert_eq!(slow.await.unwrap(), Ok(42));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_port_answers_at_once_and_a_late_one_is_expired() {
    let system = System::new();
    let d = system.spawn(ActorSpec::<Deferrer>::new(())).unwrap();
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        d.ask(Req::DropPort).ttl(Duration::from_secs(30)).await,
        Err(DeliveryError::Unanswered)
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "not at the deadline");
    let late = d
        .ask(Req::Slow(7, Duration::from_secs(5)))
        .ttl(Duration::from_secs(1))
        .await;
    assert_eq!(late, Err(DeliveryError::Expired));
}

#[tokio::test(start_paused = true)]
async fn a_port_sent_after_the_deadline_is_refused() {
    struct Keeper {
        port: Option<ReplyPort<u64>>,
    }
    impl Actor for Keeper {
        type Args = ();
        type Msg = bool;
        type Reply = u64;
        type Error = String;
        async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
            Ok(Keeper { port: None })
        }
        async fn handle(&mut self, keep: bool, ctx: &mut Context<Self>) -> Result<u64, String> {
            if keep {
                self.port = Some(ctx.defer());
                return Ok(0);
            }
            let port = self.port.take().expect("a kept port");
            Ok(match port.send(9) {
                Ok(()) => 1,
                Err(DeliveryError::Expired) => 2,
                Err(_) => 3,
            })
        }
    }
    let system = System::new();
    let k = system.spawn(ActorSpec::<Keeper>::new(())).unwrap();
    let first = {
        let k = k.clone();
        tokio::spawn(async move { k.ask(true).ttl(Duration::from_millis(100)).await })
    };
    assert_eq!(first.await.unwrap(), Err(DeliveryError::Expired));
    assert_eq!(k.ask(false).await, Ok(2), "the port refuses a reply past the deadline");
}

// ---- the same through the macros: a ReplyPort argument, messages that are not Clone ----

#[derive(Actor, Clone, Default)]
struct Front;

#[messages(no_clone)]
impl Front {
    /// Answered later through the port.
    #[message]
    fn later(&self, n: u64, reply: ReplyPort<u64>) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = reply.send(n + 1);
        });
    }

    /// Takes something that is not Clone.
    #[message]
    fn hand(&self, tx: oneshot::Sender<&'static str>) -> bool {
        tx.send("handed").is_ok()
    }
}

#[tokio::test(start_paused = true)]
async fn macro_actors_defer_replies_and_take_messages_that_are_not_clone() {
    let system = System::new();
    let f = system.spawn(Front::spec(Front).name("front")).unwrap();
    assert_eq!(f.later(41).await, Ok(42));
    let (tx, rx) = oneshot::channel();
    assert_eq!(f.hand(tx).await, Ok(true));
    assert_eq!(rx.await.unwrap(), "handed");
}

// ---- inheritance: every send inside a handler ----

#[derive(Actor, Clone, Default)]
struct Leaf;

#[messages]
impl Leaf {
    /// The header this message arrived with.
    #[message]
    fn header(&self, ctx: &mut Context<Self>) -> Header {
        ctx.header().unwrap().clone()
    }
}

struct Parent {
    leaf: ActorRef<Leaf>,
}

impl Actor for Parent {
    type Args = ActorRef<Leaf>;
    type Msg = (Option<Duration>, bool);
    type Reply = (Header, Header);
    type Error = DeliveryError;

    async fn start(leaf: &ActorRef<Leaf>, _: &mut Context<Self>) -> Result<Self, DeliveryError> {
        Ok(Parent { leaf: leaf.clone() })
    }

    /// Asks the leaf with a plain `ask` (no `ctx`) or the macro-generated method, optionally
    /// with a TTL longer than its own deadline allows.
    async fn handle(
        &mut self,
        (ttl, generated): Self::Msg,
        ctx: &mut Context<Self>,
    ) -> Result<Self::Reply, DeliveryError> {
        let mine = ctx.header().unwrap().clone();
        let leaf = &self.leaf;
        let got = match (generated, ttl) {
            (true, Some(t)) => leaf.header().ttl(t).await?,
            (true, None) => leaf.header().await?,
            (false, ttl) => {
                let ask = leaf.ask(LeafMessage::Header());
                let reply = match ttl {
                    Some(t) => ask.ttl(t).await?,
                    None => ask.await?,
                };
                let LeafReply::Header(h) = reply;
                h
            }
        };
        Ok((mine, got))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_send_inside_a_handler_inherits_the_deadline_and_the_trace() {
    let system = System::new();
    let leaf = system.spawn(Leaf::spec(Leaf).name("leaf")).unwrap();
    let parent = system
        .spawn(ActorSpec::<Parent>::named("parent", leaf.clone()))
        .unwrap();
    for generated in [false, true] {
        for ttl in [None, Some(Duration::from_secs(50))] {
            let (mine, got) = parent.ask((ttl, generated)).ttl(Duration::from_secs(2)).await.unwrap();
            assert_eq!(
                got.deadline, mine.deadline,
                "generated {generated}, ttl {ttl:?}: never past the parent's deadline"
            );
            assert_eq!(got.trace.trace_id, mine.trace.trace_id, "the same trace");
            assert_eq!(
                got.trace.parent,
                Some(mine.id.span_id()),
                "the parent is the envelope being handled"
            );
            assert_eq!(got.trace.flags, mine.trace.flags, "the flags are propagated");
        }
    }
    // A shorter TTL is kept: inheritance only ever shortens.
    let (mine, got) = parent
        .ask((Some(Duration::from_millis(500)), true))
        .ttl(Duration::from_secs(2))
        .await
        .unwrap();
    assert!(got.deadline < mine.deadline);
    // Outside a handler nothing is inherited: a new trace starts.
    let h = leaf.header().await.unwrap();
    let again = leaf.header().await.unwrap();
    assert_ne!(
        h.trace.trace_id, again.trace.trace_id,
        "each request from outside its own trace"
    );
    assert!(
        h.trace.trace_id.get() >> 64 != 0,
        "a 128-bit trace id: {}",
        h.trace.trace_id
    );
    assert_eq!(h.trace.parent, None);
    assert!(h.trace.sampled());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_given_a_traceparent_continues_that_trace_through_sub_requests() {
    let system = System::new();
    let leaf = system.spawn(Leaf::spec(Leaf).name("leaf")).unwrap();
    let parent = system
        .spawn(ActorSpec::<Parent>::named("parent", leaf.clone()))
        .unwrap();
    // An unsampled caller: the flag travels with the trace.
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let trace = TraceContext::parse_traceparent(caller).unwrap();
    let (mine, got) = parent.ask((None, false)).trace(trace).await.unwrap();
    assert_eq!(mine.trace, trace, "the request continues the caller's trace");
    assert_eq!(mine.trace.parent.unwrap().get(), 0xb7ad6b7169203331);
    assert_eq!(got.trace.trace_id.get(), 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(got.trace.parent, Some(mine.id.span_id()));
    assert!(!got.trace.sampled());
    // What a sub-request to another process would carry: the same trace, this envelope as parent.
    assert_eq!(
        mine.traceparent(),
        format!("00-0af7651916cd43dd8448eb211c80319c-{:016x}-00", mine.id.get())
    );
    assert_eq!(TraceContext::parse_traceparent(&mine.traceparent()), Ok(got.trace));
}

#[test]
fn traceparent_values_that_break_the_w3c_rules_are_refused() {
    let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert!(TraceContext::parse_traceparent(good).is_ok());
    // A later version may append fields; version ff may not exist.
    assert!(TraceContext::parse_traceparent(&format!("cc{}-what-the-future-holds", &good[2..])).is_ok());
    for bad in [
        "",
        "00",
        &good[..54],
        &format!("{good}-"),
        &format!("{good}0"),
        &good.to_uppercase(),
        &format!("ff{}", &good[2..]),
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c+b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
        "00-0af7651916cd43dd8448eb211c8031é-b7ad6b7169203331-01",
    ] {
        assert!(TraceContext::parse_traceparent(bad).is_err(), "{bad:?}");
    }
}
