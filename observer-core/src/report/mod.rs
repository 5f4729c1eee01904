//! Reports: live lines, the text summary, JSON.

pub mod asyncio;
pub mod dot;
pub mod dump;
pub mod findings;
pub mod gil;
pub mod held;
pub mod html;
pub mod json;
pub mod live;
pub mod perfetto;
#[cfg(test)]
pub mod pictures_tests;
pub mod pool;
pub mod python;
pub mod text;

pub use crate::vocab::text::{dur, escape};
