//! Every public type is Send and Sync where it should be.

mod common;

use common::Probe;
use crashonly::*;

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<System>();
    send_sync::<ActorRef<Probe>>();
    send_sync::<SupervisorRef>();
    send_sync::<DeliveryError>();
    send_sync::<SendError<String>>();
    send_sync::<SpawnError>();
    send_sync::<SystemError>();
    send_sync::<crashonly::metrics::NotReady>();
    send_sync::<CrashReport>();
    send_sync::<Header>();
    send_sync::<Down>();
    send_sync::<Timer>();
    send_sync::<Config>();
    send_sync::<Stats>();
    send_sync::<EnvelopeId>();
    send_sync::<Intensity>();
    send_sync::<Backoff>();
    send::<Context<Probe>>();
    send::<ActorSpec<Probe>>();
    send::<SupervisorSpec>();
    send::<ChildSpec>();
    send::<MonitorStream>();
    send::<Tell<'static, Probe>>();
    send::<Ask<'static, Probe>>();
    send::<TellFuture<'static, String>>();
    send_sync::<Policy>();
    send_sync::<PolicyError>();
    send_sync::<Lease>();
    send_sync::<LeaseError>();
    send_sync::<LeaseTable>();
    send_sync::<Snapshot>();
    send::<Call<'static, Probe, u64>>();
    send_sync::<store::MemoryStore>();
    send_sync::<store::RedbStore>();
    send_sync::<store::StoreError>();
    send_sync::<store::Txn>();
    send_sync::<store::DurableLease>();
    send_sync::<store::Versioned>();
    send::<store::DurableState>();
    send_sync::<std::sync::Arc<dyn store::Store>>();
}
