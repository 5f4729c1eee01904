//! Symbols, stacks and Python awareness.
