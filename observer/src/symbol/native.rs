//! Native stacks of blocked threads, without stopping the target: the stack
//! is copied with `process_vm_readv`, unwound with DWARF CFI (framehop) and
//! symbolized with blazesym.

use std::sync::Arc;

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Unwinder,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};

use super::{Frame, Regs, maps::Module};

/// Most of a stack we copy: blocked threads' stacks are rarely deeper, and
/// a truncated copy only gives a shorter stack.
pub(super) const MAX_STACK_COPY: u64 = 512 << 10;
/// Most frames we report for one thread.
pub(super) const MAX_FRAMES: usize = 256;

/// Reads `len` bytes at `addr` of process `pid`. Returns what could be read
/// (possibly fewer bytes, possibly none).
pub(super) fn read_mem(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0usize;
    // process_vm_readv stops at the first unreadable page; go on reading
    // what follows only from where it stopped (a short read ends the copy).
    while got < len {
        let local = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: len - got,
        };
        let remote = libc::iovec {
            iov_base: (addr + got as u64) as *mut libc::c_void,
            iov_len: len - got,
        };
        // SAFETY: `local` points into `buf`, which we own and which has room
        // for `len - got` bytes; the kernel validates `remote`.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    buf.truncate(got);
    buf
}

/// A copy of a thread's stack from `base` upwards.
pub(super) struct StackCopy {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl StackCopy {
    pub fn read_u64(&self, addr: u64) -> Result<u64, ()> {
        let off = addr.checked_sub(self.base).ok_or(())? as usize;
        let b = self
            .bytes
            .get(off..off.checked_add(8).ok_or(())?)
            .ok_or(())?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
    }
}

pub(super) type Unwinder64 = UnwinderX86_64<Arc<[u8]>>;

/// Builds a framehop unwinder over the modules with executable code.
pub(super) fn unwinder_for(modules: &[Module]) -> Unwinder64 {
    let mut u = Unwinder64::new();
    for m in modules.iter().filter(|m| m.code.start < m.code.end) {
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: m.elf.text.clone(),
            got_svma: m.elf.got.clone(),
            eh_frame_svma: m.elf.eh_frame.as_ref().map(|s| s.0.clone()),
            eh_frame: m.elf.eh_frame.as_ref().map(|s| s.1.clone()),
            eh_frame_hdr_svma: m.elf.eh_frame_hdr.as_ref().map(|s| s.0.clone()),
            eh_frame_hdr: m.elf.eh_frame_hdr.as_ref().map(|s| s.1.clone()),
            debug_frame: m.elf.debug_frame.clone(),
            ..Default::default()
        };
        u.add_module(framehop::Module::new(
            m.name.clone(),
            m.code.clone(),
            m.bias,
            info,
        ));
    }
    u
}

/// Unwinds one thread: the addresses of its frames, innermost first (the
/// first is the instruction pointer, the others return addresses).
pub(super) fn unwind(
    unwinder: &Unwinder64,
    cache: &mut CacheX86_64,
    regs: Regs,
    stack: &StackCopy,
) -> Vec<FrameAddress> {
    let mut read = |addr: u64| stack.read_u64(addr);
    let mut it = unwinder.iter_frames(
        regs.ip,
        UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
        cache,
        &mut read,
    );
    let mut out = Vec::new();
    // An error ends the walk: what was found so far is the (shorter) stack.
    while let Ok(Some(f)) = it.next() {
        out.push(f);
        if out.len() >= MAX_FRAMES {
            break;
        }
    }
    out
}

/// The stack words an unwinding depends on (address, value), and its result.
type Unwound = (Vec<(u64, u64)>, Vec<u64>);

/// The cache key of creation stacks whose unwinding does not depend on bp.
const ANY_BP: u64 = u64::MAX;

/// Creation stacks already unwound, per process: threads created from the
/// same place give the same registers and the same return addresses. An
/// entry records the stack words the result depends on (see
/// `words_that_matter`); a new copy with the same registers and the same
/// values at those words unwinds identically, so the result is reused
/// exactly (a churning process would otherwise be unwound thousands of
/// times a second).
#[derive(Default)]
pub(super) struct CreationCache {
    seen: std::collections::HashMap<Regs, Vec<Unwound>>,
}

/// Distinct stacks kept per register set (the same sp and ip reached
/// through different paths).
const CREATION_VARIANTS: usize = 8;
/// Register sets remembered before the cache starts over (bounds memory).
const CREATION_KEYS: usize = 4096;

impl CreationCache {
    pub fn stack(
        &mut self,
        unwinder: &Unwinder64,
        cache: &mut CacheX86_64,
        modules: &[Module],
        regs: Regs,
        stack: &StackCopy,
    ) -> super::CreationUnwind {
        if self.seen.len() >= CREATION_KEYS {
            self.seen.clear();
        }
        let any = Regs { bp: ANY_BP, ..regs };
        for key in [regs, any] {
            if let Some((words, frames)) = self.seen.get(&key).and_then(|v| {
                v.iter()
                    .find(|(words, _)| words.iter().all(|&(a, v)| stack.read_u64(a) == Ok(v)))
            }) {
                return super::CreationUnwind {
                    frames: frames.clone(),
                    words: words.clone(),
                    any_bp: key.bp == ANY_BP,
                };
            }
        }
        let Some((reads, frames)) = creation_walk(unwinder, cache, modules, regs, stack) else {
            return Default::default(); // a failed walk teaches nothing about the next one
        };
        let mut same = |r: Regs, s: &StackCopy| {
            creation_walk(unwinder, cache, modules, r, s).is_some_and(|(r2, f2)| {
                f2 == frames && r2.iter().map(|w| w.0).eq(reads.iter().map(|w| w.0))
            })
        };
        let words = words_that_matter(stack, &reads, |s| same(regs, s));
        // bp at the clone (often a pthread descriptor, a new one per thread)
        let any_bp = trial_values(regs.bp, stack)
            .iter()
            .all(|&bp| same(Regs { bp, ..regs }, stack));
        let variants = self
            .seen
            .entry(if any_bp { any } else { regs })
            .or_default();
        if variants.len() >= CREATION_VARIANTS {
            variants.remove(0);
        }
        variants.push((words.clone(), frames.clone()));
        super::CreationUnwind {
            frames,
            words,
            any_bp,
        }
    }
}

/// Values a word (or bp) that was `v` is tried with: 0 (a frame-pointer
/// walk stops there), a far one (a read there fails), and an aligned
/// address inside the copy (a frame-pointer walk would go on from there):
/// a walk that ended at `v` need not end at every value.
fn trial_values(v: u64, stack: &StackCopy) -> [u64; 3] {
    let inside = (stack.base + stack.bytes.len() as u64 / 2) & !15;
    let inside = if inside == v { inside + 16 } else { inside };
    [0, v ^ 0x5a5a_5a5a_5a5a_5a58, inside]
}

/// One unwinding of a creation stack: the stack words it read (address,
/// value) and the creation frames; None if it found no creation site.
fn creation_walk(
    unwinder: &Unwinder64,
    cache: &mut CacheX86_64,
    modules: &[Module],
    regs: Regs,
    stack: &StackCopy,
) -> Option<Unwound> {
    // glibc ends clone3's and clone's CFI before the syscall (the
    // child's unwind info would be wrong), so no rule covers the ip.
    // Both are frameless in the parent: the return address is at sp.
    let mut reads = Vec::new();
    let ret = stack.read_u64(regs.sp).ok()?;
    reads.push((regs.sp, ret));
    let mut addrs = vec![FrameAddress::from_instruction_pointer(regs.ip)];
    let mut read = |addr: u64| {
        let v = stack.read_u64(addr);
        if let Ok(v) = v {
            reads.push((addr, v));
        }
        v
    };
    // The caller's frame: its pc is a return address (looked up as is;
    // the rule after a call is the rule of the call).
    let mut it = unwinder.iter_frames(
        ret,
        UnwindRegsX86_64::new(ret, regs.sp + 8, regs.bp),
        cache,
        &mut read,
    );
    while let Ok(Some(f)) = it.next() {
        match f {
            FrameAddress::InstructionPointer(pc) => {
                addrs.extend(FrameAddress::from_return_address(pc));
            }
            other => addrs.push(other),
        }
        if addrs.len() >= MAX_FRAMES {
            break;
        }
    }
    let r = creation_frames(modules, &addrs);
    (!r.is_empty()).then_some((reads, r))
}

/// The words of `reads` the result depends on. The unwinder reads every
/// register a frame saved, but a saved rbp it never uses again (a loop
/// counter in rbp of a frame whose CFA is rsp-based) differs from one
/// clone to the next and would make each stack look new. A word goes when
/// the walk with each of its `trial_values` reads the same addresses and
/// finds the same frames (`same`): a value used as an address moves the
/// reads, one tested against 0 (end of stack) changes the walk, and one
/// inside the copy continues a walk that ended at the word. The return
/// address at sp and words read twice stay.
fn words_that_matter(
    stack: &StackCopy,
    reads: &[(u64, u64)],
    mut same: impl FnMut(&StackCopy) -> bool,
) -> Vec<(u64, u64)> {
    let mut keep = Vec::with_capacity(reads.len());
    let mut copy = StackCopy {
        base: stack.base,
        bytes: stack.bytes.clone(),
    };
    for (i, &(a, v)) in reads.iter().enumerate() {
        let plain = i > 0 && reads.iter().filter(|w| w.0 == a).count() == 1;
        let off = (a - stack.base) as usize; // it was read: in the copy
        let mut drop = plain;
        for x in trial_values(v, stack) {
            if !drop {
                break;
            }
            copy.bytes[off..off + 8].copy_from_slice(&x.to_le_bytes());
            drop = same(&copy);
        }
        copy.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
        if !drop {
            keep.push((a, v));
        }
    }
    keep
}

/// A creation stack from the creation site outwards (return addresses).
/// The clone syscall runs in libc (frame 0's module), whose pthread_create
/// and clone frames come first; a C++ runtime's thread wrapper
/// (`std::thread` in libstdc++/libc++) is skipped too, so that the site is
/// the program's own call. Nothing left (a static binary): empty.
pub(super) fn creation_frames(modules: &[Module], addrs: &[FrameAddress]) -> Vec<u64> {
    let module_of = |a: u64| modules.iter().position(|m| m.code.contains(&a));
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let libc = module_of(first.address_for_lookup());
    let runtime = |i: Option<usize>| {
        i.is_some_and(|i| {
            let file = modules[i].name.rsplit('/').next().unwrap_or_default();
            file.starts_with("libstdc++") || file.starts_with("libc++")
        })
    };
    let site = addrs.iter().skip(1).position(|f| {
        let m = module_of(f.address_for_lookup());
        m.is_some() && m != libc && !runtime(m)
    });
    match site {
        Some(i) => addrs[i + 1..].iter().map(|f| f.address()).collect(),
        None => Vec::new(),
    }
}

/// Turns one blazesym result into our frames (inlined callees first).
pub(super) fn frames_from_sym(
    addr: u64,
    module: &Module,
    sym: &blazesym::symbolize::Sym<'_>,
    out: &mut Vec<Frame>,
) {
    let module_offset = module.svma(addr);
    let loc = |ci: &Option<blazesym::symbolize::CodeInfo<'_>>| match ci {
        Some(ci) => (Some(ci.to_path().to_string_lossy().into_owned()), ci.line),
        None => (None, None),
    };
    for f in sym.inlined.iter().rev() {
        let (file, line) = loc(&f.code_info);
        out.push(Frame {
            addr,
            function: Some(super::demangle(&f.name).into_owned()),
            file,
            line,
            module: Some(module.name.clone()),
            module_offset,
            inlined: true,
        });
    }
    let (file, line) = loc(&sym.code_info.as_deref().cloned());
    out.push(Frame {
        addr,
        function: Some(super::demangle(&sym.name).into_owned()),
        file,
        line,
        module: Some(module.name.clone()),
        module_offset,
        inlined: false,
    });
}
