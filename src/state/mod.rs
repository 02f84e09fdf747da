//! The state a request runs against: [`Core`], one core's context (owned by
//! its thread: `Rc`, `RefCell`, `Cell`), and [`Shared`], what every core
//! shares (the only part that crosses threads, behind an `Arc`), with
//! [`Published`] snapshots for what the control thread replaces.
//!
//! Handlers and the connection loop take `&Core` and ask it for what they
//! need through methods (`core.tokens_config()`, `core.pg()`,
//! `core.keys()`, ...); no field is public.
//!
//! A leaf below `handlers` and `net`: never imports `cores`, `net`,
//! `handlers`, `router`, or `http` request types.

mod core;
mod published;
mod shared;

pub use self::core::Core;
pub use published::Published;
pub use shared::{Shared, SharedParts};

#[cfg(test)]
pub(crate) use shared::for_tests as shared_for_tests;
