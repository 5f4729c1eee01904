//! Creation-stack signatures: a thread storm from one call site sends its
//! stacks once. After each creation stack is unwound, the registers and
//! stack words the result depends on (symbol::CreationUnwind) become the
//! process's signature in the kernel (STACK_SIG); a later clone whose
//! registers and words match unwinds to the same frames, so BPF sends it
//! without its 2 KiB copy and names the signature instead (exact, not
//! sampled).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};

use observer_ebpf::bindings::{OBS_SIG_ANY_BP, OBS_SIG_SPAN, OBS_SIG_WORDS, obs_stack_sig};

use crate::probe::Probes;
use crate::symbol::{CreationUnwind, Regs};

/// Signatures remembered per process: records in flight may name one the
/// kernel no longer holds.
const KEPT: usize = 4;

/// Signature ids, unique across the observer (the daemon's sessions share
/// one kernel map, and BPF tells a replaced value by its id changing).
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

fn next_id() -> u32 {
    loop {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// Signatures skipped at most between two put in, when none is matched
/// (a process whose creation stacks always differ: each new signature
/// costs the kernel a wake-up of the reader and us a map update).
const MAX_SKIP: u32 = 64;

#[derive(Default)]
struct Proc {
    /// Its latest signatures and their frames, newest last.
    kept: VecDeque<(obs_stack_sig, Vec<u64>)>,
    /// The newest signature was matched by a clone.
    matched: bool,
    /// Signatures to skip before the next one, and skipped so far.
    skip: u32,
    skipped: u32,
    /// `skip` is set for the newest signature.
    decided: bool,
}

#[derive(Default)]
pub(crate) struct StackSigs {
    known: HashMap<u32, Proc>,
    /// Signatures to put into the kernel (None: to remove) at the next chance.
    out: Vec<(u32, Option<obs_stack_sig>)>,
    /// Creation stacks unwound from a copy, and known from a signature.
    pub(crate) copied: u64,
    pub(crate) matched: u64,
    /// Signatures named by a record but no longer remembered.
    pub(crate) missed: u64,
}

impl StackSigs {
    /// A copy of process `tgid`'s creation stack was unwound (`u`): the
    /// next clone that matches needs no copy. While no signature of the
    /// process is matched, fewer are put in (1 of 2, 3, 5, ... up to 65).
    pub(crate) fn learn(&mut self, tgid: u32, regs: Regs, u: &CreationUnwind) {
        self.copied += 1;
        let frames = &u.frames[..];
        if frames.is_empty() {
            return;
        }
        let Some(mut sig) = signature(regs, &u.words, u.any_bp, 0) else {
            return;
        };
        sig.tgid = tgid;
        let p = self.known.entry(tgid).or_default();
        // Copies sent before the kernel had the newest signature: no change.
        if p.kept
            .back()
            .is_some_and(|(k, f)| same(k, &sig) && f == frames)
        {
            return;
        }
        // The newest is to be replaced: by how many more, once per newest.
        if !p.kept.is_empty() && !p.decided {
            p.decided = true;
            p.skip = if p.matched {
                0
            } else {
                (p.skip * 2).clamp(1, MAX_SKIP)
            };
        }
        if p.skipped < p.skip {
            p.skipped += 1;
            return;
        }
        p.skipped = 0;
        p.decided = false;
        p.matched = false;
        sig.id = next_id();
        if p.kept.len() >= KEPT {
            p.kept.pop_front();
        }
        p.kept.push_back((sig, frames.to_vec()));
        self.out.retain(|(t, _)| *t != tgid);
        self.out.push((tgid, Some(sig)));
    }

    /// The frames of signature `id` of process `tgid`.
    pub(crate) fn frames(&mut self, tgid: u32, id: u32) -> Option<Vec<u64>> {
        let p = self.known.get_mut(&tgid);
        let f = p.and_then(|p| {
            let f = p
                .kept
                .iter()
                .find(|(s, _)| s.id == id)
                .map(|(_, f)| f.clone());
            p.matched |= f.is_some() && p.kept.back().is_some_and(|(s, _)| s.id == id);
            f
        });
        match f {
            Some(_) => self.matched += 1,
            None => self.missed += 1,
        }
        f
    }

    /// Process `tgid` ended or runs another program. The kernel drops its
    /// signature then, but one put after that (learnt before, pushed
    /// later) would stay: it is removed again.
    pub(crate) fn forget(&mut self, tgid: u32) {
        self.known.remove(&tgid);
        self.out.retain(|(t, _)| *t != tgid);
        self.out.push((tgid, None));
    }

    /// Puts the signatures learnt since the last call into the kernel.
    pub(crate) fn push(&mut self, probes: &mut Probes) {
        for (tgid, sig) in self.out.drain(..) {
            probes.set_stack_sig(tgid, sig.as_ref());
        }
    }
}

/// The same registers and words (whatever their ids).
fn same(a: &obs_stack_sig, b: &obs_stack_sig) -> bool {
    (a.tgid, a.ip, a.sp, a.bp, a.flags, a.n, a.span, a.off, a.val)
        == (b.tgid, b.ip, b.sp, b.bp, b.flags, b.n, b.span, b.off, b.val)
}

/// The signature of an unwinding that began at `regs` and depends on the
/// stack words `reads` (and on bp unless `any_bp`): None when a word lies
/// where BPF does not look (below sp, past OBS_SIG_SPAN, unaligned) or
/// there are more than OBS_SIG_WORDS.
pub(crate) fn signature(
    regs: Regs,
    reads: &[(u64, u64)],
    any_bp: bool,
    id: u32,
) -> Option<obs_stack_sig> {
    let mut sig = obs_stack_sig {
        ip: regs.ip,
        sp: regs.sp,
        bp: if any_bp { 0 } else { regs.bp },
        flags: if any_bp { OBS_SIG_ANY_BP } else { 0 },
        id,
        ..Default::default()
    };
    let mut words: Vec<(u64, u64)> = Vec::with_capacity(reads.len());
    for &(addr, val) in reads {
        let off = addr.checked_sub(regs.sp)?;
        if off % 8 != 0 || off + 8 > OBS_SIG_SPAN as u64 {
            return None;
        }
        match words.iter().find(|w| w.0 == off) {
            Some(w) if w.1 != val => return None, // one word, two values: no copy says that
            Some(_) => {}
            None => words.push((off, val)),
        }
    }
    if words.is_empty() || words.len() > OBS_SIG_WORDS as usize {
        return None;
    }
    for (i, &(off, val)) in words.iter().enumerate() {
        sig.off[i] = off as u16;
        sig.val[i] = val;
    }
    sig.n = words.len() as u32;
    sig.span = words.iter().map(|w| w.0 + 8).max()? as u32;
    Some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: u64 = 0x7ffd_0000_1000;

    fn regs() -> Regs {
        Regs {
            ip: 0x7f00_0000_1234,
            sp: SP,
            bp: 0,
        }
    }

    #[test]
    fn a_signature_holds_the_words_read_above_sp() {
        let reads = [
            (SP, 0x11),
            (SP + 0x48, 0x22),
            (SP + 0x50, 0x33),
            (SP + 0x48, 0x22),
        ];
        let s = signature(regs(), &reads, false, 7).unwrap();
        assert_eq!((s.id, s.n, s.span), (7, 3, 0x58));
        assert_eq!(&s.off[..3], &[0, 0x48, 0x50]);
        assert_eq!(&s.val[..3], &[0x11, 0x22, 0x33]);
        assert_eq!((s.ip, s.sp, s.bp), (regs().ip, SP, 0));
    }

    #[test]
    fn words_bpf_would_not_check_give_no_signature() {
        let r = regs();
        assert!(signature(r, &[(SP - 8, 1)], false, 1).is_none(), "below sp");
        assert!(
            signature(r, &[(SP + 4, 1)], false, 1).is_none(),
            "unaligned"
        );
        let far = SP + OBS_SIG_SPAN as u64 - 8;
        assert!(
            signature(r, &[(far, 1)], false, 1).is_some(),
            "the last word in span"
        );
        assert!(
            signature(r, &[(far + 8, 1)], false, 1).is_none(),
            "past the span"
        );
        let many: Vec<(u64, u64)> = (0..=OBS_SIG_WORDS as u64)
            .map(|i| (SP + 8 * i, i))
            .collect();
        assert!(signature(r, &many, false, 1).is_none(), "too many words");
        assert!(signature(r, &many[1..], false, 1).is_some());
        assert!(signature(r, &[], false, 1).is_none(), "nothing read");
        assert!(
            signature(r, &[(SP, 1), (SP, 2)], false, 1).is_none(),
            "one word, two values"
        );
    }

    #[test]
    fn bp_is_left_out_when_the_walk_does_not_use_it() {
        let r = Regs {
            bp: 0x1234,
            ..regs()
        };
        let s = signature(r, &[(SP, 1)], true, 1).unwrap();
        assert_eq!((s.bp, s.flags), (0, OBS_SIG_ANY_BP));
        let s = signature(r, &[(SP, 1)], false, 1).unwrap();
        assert_eq!((s.bp, s.flags), (0x1234, 0));
    }

    fn unwound(words: &[(u64, u64)], frames: &[u64]) -> CreationUnwind {
        CreationUnwind {
            frames: frames.to_vec(),
            words: words.to_vec(),
            any_bp: false,
        }
    }

    #[test]
    fn records_name_signatures_still_kept() {
        let mut s = StackSigs::default();
        let mut ids = Vec::new();
        for i in 1..=5 {
            s.learn(10, regs(), &unwound(&[(SP, i)], &[0xa + i]));
            assert_eq!(s.out.len(), 1, "only the newest goes to the kernel");
            let id = s.out[0].1.unwrap().id;
            assert_eq!(s.frames(10, id), Some(vec![0xa + i]), "matched: no backoff");
            ids.push(id);
        }
        assert_eq!(
            s.frames(10, ids[0]),
            None,
            "evicted after {KEPT} newer ones"
        );
        assert_eq!(
            s.frames(10, ids[1]),
            Some(vec![0xa + 2]),
            "in flight: still known"
        );
        assert_eq!((s.copied, s.matched, s.missed), (5, 6, 1));
        s.out.clear();
        s.learn(10, regs(), &unwound(&[(SP, 5)], &[0xa + 5]));
        assert!(s.out.is_empty(), "the same signature again: nothing to put");
        s.learn(10, regs(), &unwound(&[(SP, 9)], &[]));
        assert!(s.out.is_empty(), "a failed unwinding teaches nothing");
        s.learn(10, regs(), &unwound(&[(SP, 7)], &[0xa]));
        s.forget(10);
        assert!(s.frames(10, ids[4]).is_none());
        assert_eq!(s.out.len(), 1);
        assert!(s.out[0].1.is_none(), "removed from the kernel (again)");
    }

    #[test]
    fn signatures_nobody_matches_are_put_in_ever_more_rarely() {
        let mut s = StackSigs::default();
        let mut put = Vec::new();
        for i in 1..=200u64 {
            s.learn(10, regs(), &unwound(&[(SP, i)], &[0xa]));
            if let Some((_, Some(sig))) = s.out.pop() {
                put.push(sig.val[0]);
            }
        }
        assert_eq!(
            &put[..7],
            &[1, 3, 6, 11, 20, 37, 70],
            "skips 1, 2, 4, ... 32"
        );
        assert!(
            put.windows(2)
                .skip(6)
                .all(|w| w[1] - w[0] == MAX_SKIP as u64 + 1)
        );
        assert_eq!(put.len(), 9);
        let last = s.known[&10].kept.back().unwrap().0.id;
        assert!(s.frames(10, last).is_some());
        s.learn(10, regs(), &unwound(&[(SP, 1000)], &[0xa]));
        assert_eq!(
            s.out.len(),
            1,
            "matched again: the next one goes in at once"
        );
    }
}
