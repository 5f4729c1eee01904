//! The CPython reader over random and adversarial memory (through `Mem`):
//! pointers into the same few pages (so linked lists cycle and objects
//! alias), huge counts and sizes, reads that fail or tear (a word changes
//! between two reads). It must neither panic nor ask for absurd reads
//! (a live read allocates what it asks for). See `crate::fuzz` for the
//! short and the fixed-time runs.

use std::cell::Cell;

use proptest::prelude::*;

use super::{
    layout,
    reader::{Mem, Reader},
};

/// The largest single read a walk may ask for: a live read allocates it.
const MAX_READ: usize = 16 << 20;

const BASE: u64 = 0x7f00_0000_0000;

/// A small address space at `BASE`: `words`, and `torn` to read instead on
/// reads whose number has its bit set in `torn_mask` (a word that changed
/// between two reads); reads whose number has its bit set in `fail_mask`
/// fail.
#[derive(Debug)]
struct Heap {
    words: Vec<u64>,
    torn: Vec<u64>,
    fail_mask: u64,
    torn_mask: u64,
    reads: Cell<u64>,
}

impl Mem for Heap {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        assert!(len <= MAX_READ, "a read of {len} bytes at {addr:#x}");
        let n = self.reads.get();
        self.reads.set(n + 1);
        if n > 200_000 {
            // A walk that keeps reading is stuck in a loop it does not bound.
            panic!("more than 200000 reads: an unbounded walk");
        }
        if self.fail_mask >> (n % 64) & 1 == 1 {
            return None;
        }
        let src = if self.torn_mask >> (n % 64) & 1 == 1 {
            &self.torn
        } else {
            &self.words
        };
        let off = addr.checked_sub(BASE)? as usize;
        let end = off.checked_add(len)?;
        if end > src.len() * 8 {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        for i in off..end {
            out.push((src[i / 8] >> ((i % 8) * 8)) as u8);
        }
        Some(out)
    }
}

/// A word as the heap holds it: mostly pointers into the heap (aligned or
/// not), small counts, and the odd huge value.
fn word(n_words: usize) -> impl Strategy<Value = u64> {
    let top = n_words as u64 * 8;
    prop_oneof![
        6 => (0..top / 8).prop_map(|k| BASE + k * 8),
        1 => (0..top).prop_map(|k| BASE + k),
        3 => 0u64..64,
        1 => 0u64..5000,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => Just(i64::MAX as u64),
        1 => Just(1u64 << 62),
        1 => any::<u64>(),
    ]
}

fn heap() -> impl Strategy<Value = Heap> {
    (64usize..1024).prop_flat_map(|n| {
        (
            prop::collection::vec(word(n), n),
            prop::collection::vec((any::<prop::sample::Index>(), word(n)), 0..32),
            any::<u64>(),
            any::<u64>(),
            0u32..4,
        )
            .prop_map(|(words, changes, fail, torn, sparse)| {
                let mut t = words.clone();
                for (i, w) in changes {
                    let i = i.index(t.len());
                    t[i] = w;
                }
                // Failing and tearing reads: none, rare, or frequent.
                let thin = |m: u64| match sparse {
                    0 => 0,
                    1 => m & (m >> 7) & (m >> 13),
                    2 => m & (m >> 5),
                    _ => m,
                };
                Heap {
                    words,
                    torn: t,
                    fail_mask: thin(fail),
                    torn_mask: thin(torn),
                    reads: Cell::new(0),
                }
            })
    })
}

#[test]
fn the_walk_never_panics_on_adversarial_memory() {
    crate::fuzz::run(
        "python walk",
        64,
        (
            heap(),
            11u64..=13,
            any::<prop::sample::Index>(),
            any::<u64>(),
        ),
        |(h, minor, interp, wait)| {
            let l = layout::for_version(3, minor).expect("a known layout");
            let interp = BASE + interp.index(h.words.len()) as u64 * 8;
            // Every thread id the heap holds small enough to be one, waiting.
            let waits: std::collections::HashMap<u32, u64> = h
                .words
                .iter()
                .filter(|&&w| w > 0 && w < 1 << 22)
                .take(8)
                .map(|&w| (w as u32, wait))
                .collect();
            let v = super::walk::inspect(&h, l, format!("3.{minor}"), interp, &waits);
            // What the report makes of it must not panic either.
            for t in &v.threads {
                let _ = v.info(t.tid);
            }
            if let Some(a) = &v.asyncio {
                let _ = a.cycles();
            }
            let _ = serde_json::to_string(&v);
        },
    );
}

#[test]
fn object_reads_never_panic_on_adversarial_memory() {
    crate::fuzz::run(
        "python objects",
        128,
        (
            heap(),
            11u64..=13,
            prop::collection::vec(any::<prop::sample::Index>(), 1..16),
        ),
        |(h, minor, objs)| {
            let l = layout::for_version(3, minor).expect("a known layout");
            let r = Reader::new(&h, l);
            for o in objs {
                let o = BASE + o.index(h.words.len()) as u64 * 8;
                let _ = r.type_name(o);
                let _ = r.obj_type_name(o);
                let _ = r.string(o);
                let _ = r.bytes_obj(o);
                let _ = r.tuple(o);
                let _ = r.long(o);
                let _ = r.dict(o);
                let _ = r.str_dict(o);
                let _ = r.attrs(o);
            }
        },
    );
}

#[test]
fn code_tables_never_panic() {
    crate::fuzz::run(
        "python code tables",
        512,
        (
            prop::collection::vec(any::<u8>(), 0..512),
            any::<i32>(),
            any::<u64>(),
            0u64..4096,
            any::<u64>(),
        ),
        |(t, first, addrq, small, slot)| {
            let _ = super::reader::line_of(&t, first, addrq);
            let _ = super::reader::line_of(&t, first, small);
            let table = super::reader::exception_table(&t);
            let unit = |a: u64| Some((*t.get(a as usize)?, *t.get(a as usize + 1)?));
            for slots in [1, 2] {
                let _ = super::reader::with_start(&table, slot, slots, small, unit, 53);
                let _ = super::reader::with_start(
                    &table,
                    slot % 8,
                    slots,
                    addrq,
                    |_| Some((95, 0)),
                    95,
                );
            }
        },
    );
}
