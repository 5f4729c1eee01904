//! observer's analysis core: what the kernel and the target told us
//! (`event`), the state it adds up to (`model`), the wait-for graph
//! (`graph`), what is wrong (`detect`), and how it is written (`report`).
//! Pure and replayable: no BPF, no /proc, no target memory, no runtime.
//! The binary feeds it events and passes a symbolizer in where names are
//! wanted.

pub mod detect;
pub mod engine;
pub mod event;
pub mod graph;
pub mod model;
pub mod recording;
pub mod replay;
pub mod report;
pub mod vocab;
