//! The mirrors' progress through the revocation stream: how far each
//! core's [`Mirror`] has got, and whether it is current; and
//! [`wait_applied`], which holds a revoke's answer until every current core
//! of this process has applied it.
//!
//! Owns: the cross-core "applied" signal, kept apart from the metrics: a
//! revoke's correctness waits on it, a scrape only counts it. Reached as
//! `revocation::mirror::{Progress, ProgressSlot, wait_applied}`.
//!
//! Never imports: anything of the crate but (in docs) the [`Mirror`] it
//! serves; in particular not `metrics`, `state`, a handler or `cores`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(doc)]
use super::mirror::Mirror;

/// How far each core's mirror has got in the stream: one slot per core of
/// this process, shared by the cores (`Arc`, cloned once per core at start,
/// never per request).
///
/// This is the cross-core "applied" signal a revoke waits on
/// ([`wait_applied`]), so it is kept apart from the metrics: written only by
/// each core's [`Mirror`] (through its [`ProgressSlot`]), read by
/// [`wait_applied`] and, read-only, by the `/metrics` scrape
/// ([`Progress::current_cores`]).
#[derive(Clone)]
pub struct Progress(Arc<Shared>);

/// The slots, and the highest entry this process has written and answered
/// for.
struct Shared {
    cores: Box<[CoreProgress]>,
    /// The highest entry [`wait_applied`] was asked for: a revoke or logout
    /// this process answered. A mirror that has not applied it does not
    /// answer (its core asks Redis), so a core whose mirror becomes current
    /// just after the revoke, from a round sent before the entry was
    /// written, cannot answer "not revoked" for it (found in #11's review).
    /// Written by revokes only: the line stays shared, its read is cheap.
    ///
    /// Needed for `mirror_max_lag` after the revoke only: a mirror answers
    /// only from a round sent less than that ago, and a round sent after
    /// the entry was written brings it. So the mark holds until
    /// `written_until` and no longer, and a Redis that lost its stream
    /// counter (restarted empty, its numbers starting again below the mark)
    /// cannot keep the mirrors silent.
    written: AlignedU64,
    /// Nanoseconds after `epoch` until which `written` holds.
    written_until: AlignedU64,
    epoch: Instant,
}

/// An atomic on cache lines of its own (see [`CoreProgress`]).
#[derive(Debug, Default)]
#[repr(align(128))]
struct AlignedU64(AtomicU64);

/// One core's progress. Aligned to its own pair of cache lines (the unit
/// x86 prefetches together): a mirror writes `current` after every round,
/// and that must not invalidate the line another core's mirror writes.
#[derive(Debug, Default)]
#[repr(align(128))]
struct CoreProgress {
    /// Number of the last stream entry applied (`{prefix}revlog:seq`).
    applied: AtomicU64,
    /// Whether the mirror answers now: set after each round that came back
    /// complete, cleared when it loses Redis or must sync again.
    current: AtomicBool,
}

impl Progress {
    /// Progress for `cores` cores, none of them current.
    pub fn new(cores: usize) -> Progress {
        Progress(Arc::new(Shared {
            cores: (0..cores).map(|_| CoreProgress::default()).collect(),
            written: AlignedU64::default(),
            written_until: AlignedU64::default(),
            epoch: Instant::now(),
        }))
    }

    /// Core `core`'s slot, for its mirror: the only way to write progress.
    ///
    /// # Panics
    ///
    /// When `core` is not below the `cores` given to [`Progress::new`]. The
    /// composition root builds the progress and the cores from one list and
    /// numbers the cores by their place in it, so this cannot fire there.
    pub fn slot(&self, core: usize) -> ProgressSlot {
        assert!(
            core < self.0.cores.len(),
            "no progress slot for core {core}"
        );
        ProgressSlot {
            all: self.clone(),
            index: core,
        }
    }

    /// Cores whose mirror is current now (the `/metrics` gauge).
    pub fn current_cores(&self) -> usize {
        self.0
            .cores
            .iter()
            .filter(|p| p.current.load(Ordering::Acquire))
            .count()
    }

    /// Whether every core whose mirror is current has applied entry `seq`.
    /// `current` is read first, and stored by the mirror after `applied`
    /// (both Release/Acquire): a mirror seen current is seen with at least
    /// the entry it had applied when it became so.
    fn applied_everywhere(&self, seq: u64) -> bool {
        self.0
            .cores
            .iter()
            .all(|p| !p.current.load(Ordering::Acquire) || p.applied.load(Ordering::Acquire) >= seq)
    }
}

/// One core's slot in the [`Progress`], held by that core's [`Mirror`]. Its
/// writes are visible to `revocation` only, where the mirror alone calls
/// them; nothing outside can move a core's progress.
pub struct ProgressSlot {
    all: Progress,
    index: usize,
}

impl ProgressSlot {
    fn get(&self) -> &CoreProgress {
        // In range: checked by `Progress::slot`, the only constructor, and
        // the slice never changes length.
        &self.all.0.cores[self.index]
    }

    /// [`Self::behind`] now; reads the clock only when some entry is
    /// unapplied (never on the usual path).
    #[inline]
    pub(super) fn behind_now(&self) -> bool {
        let shared = &self.all.0;
        if self.get().applied.load(Ordering::Relaxed) >= shared.written.0.load(Ordering::Acquire) {
            return false;
        }
        self.behind(Instant::now())
    }

    /// Whether this core's mirror has not yet applied an entry this process
    /// answered for less than `mirror_max_lag` before `now`: it must not
    /// answer until it has (or until then). Loads of its own line and of
    /// lines only revokes write; no clock read (the caller's `now`).
    #[inline]
    pub(super) fn behind(&self, now: Instant) -> bool {
        let shared = &self.all.0;
        if self.get().applied.load(Ordering::Relaxed) >= shared.written.0.load(Ordering::Acquire) {
            return false;
        }
        // Read after `written`, stored before it: at least as late as the
        // mark's.
        let until = shared.written_until.0.load(Ordering::Relaxed);
        now.saturating_duration_since(shared.epoch) < Duration::from_nanos(until)
    }

    /// Entry `seq` and everything before it are applied.
    pub(super) fn set_applied(&self, seq: u64) {
        self.get().applied.store(seq, Ordering::Release);
    }

    /// The mirror answers (`true`) or stopped answering (`false`).
    pub(super) fn set_current(&self, current: bool) {
        self.get().current.store(current, Ordering::Release);
    }
}

/// Waits until every core of this process whose mirror is current has
/// applied entry `seq` (at most `max`), so that a revoke answered by this
/// node is in force on all of its cores; and from its call on, a mirror
/// that has not applied `seq` does not answer at all (its core asks Redis),
/// which covers a core whose mirror was not current at this moment and
/// becomes so from a round sent before the entry existed. Cold path: revoke
/// and logout only.
pub async fn wait_applied(progress: &Progress, seq: u64, max: Duration) {
    if seq == 0 {
        return;
    }
    // From now on no mirror of this process answers before it has applied
    // `seq`, current or not at this moment.
    let shared = &progress.0;
    let until = (Instant::now() + max).saturating_duration_since(shared.epoch);
    let until = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
    shared.written_until.0.fetch_max(until, Ordering::Relaxed);
    shared.written.0.fetch_max(seq, Ordering::AcqRel);
    let deadline = Instant::now() + max;
    while !progress.applied_everywhere(seq) && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::testutil::legacy;

    /// A core whose mirror was not current when a revoke was answered must
    /// not answer from its mirror before it has applied the revoke's entry,
    /// whenever it becomes current.
    #[test]
    fn a_mirror_behind_an_answered_revoke_does_not_answer() {
        let progress = Progress::new(2);
        let (a, b) = (progress.slot(0), progress.slot(1));
        a.set_applied(3);
        b.set_applied(3);
        let now = Instant::now;
        assert!(!a.behind(now()) && !b.behind(now()));
        legacy(async {
            // Neither current: nothing to wait for, the answer goes out...
            let start = Instant::now();
            wait_applied(&progress, 5, Duration::from_secs(60)).await;
            assert!(start.elapsed() < Duration::from_secs(1));
        });
        // ...and both stay silent until they have applied entry 5, current
        // or not.
        b.set_current(true);
        assert!(a.behind(now()) && b.behind(now()));
        b.set_applied(5);
        assert!(a.behind(now()) && !b.behind(now()));
        // For the lag bound only (60 s here): a round sent after that brings
        // the entry anyway, and a stream whose numbers started again (Redis
        // restarted empty) must not keep a mirror silent.
        assert!(!a.behind(now() + Duration::from_secs(61)));
        a.set_applied(6);
        assert!(!a.behind(now()));
        // The mark only rises.
        legacy(async { wait_applied(&progress, 4, Duration::ZERO).await });
        a.set_applied(5);
        assert!(!a.behind(now()));
    }

    #[test]
    fn progress_waits_for_every_current_core_only() {
        let progress = Progress::new(3);
        let (a, b) = (progress.slot(0), progress.slot(1));
        // No mirror current: nothing to wait for.
        assert!(progress.applied_everywhere(5));
        assert_eq!(progress.current_cores(), 0);
        a.set_applied(7);
        a.set_current(true);
        b.set_applied(4);
        b.set_current(true);
        assert_eq!(progress.current_cores(), 2);
        assert!(progress.applied_everywhere(4));
        assert!(!progress.applied_everywhere(5));
        // A core that is not current answers nothing: not waited for.
        b.set_current(false);
        assert!(progress.applied_everywhere(7));
        assert!(!progress.applied_everywhere(8));
        b.set_current(true);

        legacy(async {
            // A current core behind: wait_applied gives up at its deadline
            // (a lower bound, safe on a loaded machine).
            let start = Instant::now();
            wait_applied(&progress, 7, Duration::from_millis(50)).await;
            assert!(start.elapsed() >= Duration::from_millis(50));
            // Another thread (a core) applies the entry: the wait ends on
            // that, long before the deadline (20 s of margin for a loaded
            // 2-CPU machine; the write comes after about 20 ms).
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                b.set_applied(9);
            });
            let start = Instant::now();
            a.set_applied(9);
            wait_applied(&progress, 9, Duration::from_secs(30)).await;
            assert!(start.elapsed() < Duration::from_secs(10));
            assert!(progress.applied_everywhere(9));
            writer.join().unwrap();
            // Entry 0 means "nothing written": no wait at all.
            wait_applied(&progress, 0, Duration::from_secs(30)).await;
        });
    }

    #[test]
    #[should_panic(expected = "no progress slot for core 2")]
    fn progress_has_a_slot_per_core_only() {
        let _ = Progress::new(2).slot(2);
    }
}
