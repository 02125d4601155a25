//! The sizes every actor pays: its slot and its task.

#[cfg(all(test, not(crashonly_loom)))]
mod slot {
    /// Every live actor holds one slot. Fields that most actors never use (a dedup window, the
    /// rare crash bookkeeping) are boxed; the mailbox keeps its two halves apart with the slot's
    /// read-mostly fields between them, not with an alignment (a 128-byte-aligned slot was
    /// rounded up to a multiple of 128 bytes and allocated with `posix_memalign`: 2,042 bytes
    /// per idle actor then) nor with an empty gap (128 bytes more: 720 bytes then); its flags are
    /// bytes, not 8-byte counters, its options compact, and its timers, watchers and waiting
    /// producers boxed on first use (592 bytes before those, 480, and 488 in the `repr(C)` order
    /// that keeps the loop's counters away from what senders touch); its crash and restart
    /// counts are kept with its last crash (472: a slot's `Arc` fits 496 bytes of `malloc`, not
    /// 512).
    #[test]
    fn a_slot_is_plainly_aligned_and_within_472_bytes() {
        type A = crate::__private::doc::Counter;
        type Slot = super::super::Slot<A>;
        let (size, align) = (std::mem::size_of::<Slot>(), std::mem::align_of::<Slot>());
        // The features add a counter (`observer`) and the slot's meters (`metrics`).
        let most = 472 + 8 * usize::from(cfg!(feature = "observer")) + 8 * usize::from(cfg!(feature = "metrics"));
        assert!(size <= most, "a slot is {size} bytes");
        assert!(align <= 16, "a slot is {align}-aligned");
        let (local_end, inner) = crate::mailbox::halves::<super::super::Env<A>, super::super::Cold<A>>();
        assert!(inner >= local_end + 128, "the mailbox's halves: {local_end}, {inner}");
    }
}

#[cfg(all(test, not(crashonly_loom)))]
mod task {
    /// A running actor's task is tokio's 128-aligned cell around `run`'s future (896 bytes
    /// requested at 608 bytes of future, seen with a uprobe on `posix_memalign`): bounded here so
    /// that it does not grow unnoticed. `start` is boxed, and there is one `instance` future
    /// whether it recovers or resumes (one for each made it 928 bytes).
    #[tokio::test]
    async fn the_actor_task_future_stays_within_640_bytes() {
        let system = crate::System::new();
        let r = system
            .spawn(crate::ActorSpec::<crate::__private::doc::Counter>::new(0))
            .unwrap();
        let run = r.slot().clone().run(super::super::hibernate::Begin::Recover);
        let size = std::mem::size_of_val(&run);
        assert!(size <= 640, "the task's future is {size} bytes");
    }
}
