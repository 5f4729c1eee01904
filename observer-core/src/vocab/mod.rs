//! The words the core and the binary share: frames, Python and asyncio
//! views, GIL tallies, hook rungs, syscall names. Plain data with pure
//! methods; the readers that fill them live in the binary.

pub mod asyncio;
pub mod frames;
pub mod gil;
pub mod hooks;
pub mod locks;
pub mod python;
pub mod syscalls;
pub mod text;
