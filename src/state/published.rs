//! [`Published`]: an immutable value the control thread replaces and every
//! core picks up (the key set, the client table).
//!
//! Owns: the version counter and the current `Arc`. Never imports another
//! module of the crate: it is the leaf under `Shared`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An immutable value published to every core: the control thread replaces
/// it, each core notices the new version with one atomic load per request
/// and takes its own copy. The mutex is touched only when the version
/// changed, so the hot path never contends on it.
pub struct Published<T> {
    version: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published {
            version: AtomicU64::new(1),
            value: Mutex::new(Arc::new(value)),
        }
    }

    /// Replaces the value; every core picks it up on its next request.
    pub fn publish(&self, value: T) {
        let mut guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(value);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current version number.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_version_one_with_the_value() {
        let p = Published::new("a");
        assert_eq!(p.version(), 1);
        assert_eq!(*p.load(), "a");
    }

    #[test]
    fn every_publish_bumps_the_version_and_replaces_the_value() {
        let p = Published::new(1);
        p.publish(2);
        assert_eq!(p.version(), 2);
        assert_eq!(*p.load(), 2);
        // Publishing an equal value is still a new version: cores compare
        // versions, not values (the key set compares its own generation).
        p.publish(2);
        assert_eq!(p.version(), 3);
        assert_eq!(*p.load(), 2);
    }

    #[test]
    fn a_loaded_copy_outlives_the_next_publish() {
        let p = Published::new(String::from("old"));
        let held = p.load();
        p.publish(String::from("new"));
        assert_eq!(*held, "old");
        assert_eq!(*p.load(), "new");
    }

    #[test]
    fn a_poisoned_lock_still_publishes_and_loads() {
        let p = Arc::new(Published::new(0));
        let q = p.clone();
        let _ = std::thread::spawn(move || {
            let _guard = q.value.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(p.value.is_poisoned());
        p.publish(7);
        assert_eq!(*p.load(), 7);
        assert_eq!(p.version(), 2);
    }

    #[test]
    fn another_thread_sees_the_new_version_and_value() {
        let p = Arc::new(Published::new(0u64));
        let seen = p.version();
        let q = p.clone();
        std::thread::spawn(move || q.publish(9)).join().unwrap();
        assert_ne!(p.version(), seen);
        assert_eq!(*p.load(), 9);
    }
}
