//! Sources of events: the live BPF source and /proc.

pub mod activity;
pub mod event_loop;
pub mod live;
pub mod preheld;
pub mod procfs;
pub mod progress;
pub mod snapshot;
