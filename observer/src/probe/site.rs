//! Where to put a uprobe in a function so the kernel need not single-step.
//!
//! A uprobe hit traps, runs the BPF program, then executes the displaced
//! instruction out of line with a single-step trap (≈13 µs here) — unless
//! the kernel emulates that instruction (x86-64: `push reg`, `jmp`/`jcc`/
//! `call` rel, nop forms; not `endbr64`), which costs ≈1 µs. So for each
//! probed function we decode its first straight-line instructions and move
//! the probe to the first emulated one before which nothing the BPF program
//! reads has changed: the argument registers it reads, `rsp`, and `[rsp]`
//! (the return address, which the call-site lookup and a uretprobe's hijack
//! both use). Otherwise the probe stays at +0.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// A probed function in one file: its entry and the chosen probe site, both
/// as file offsets (what the kernel's uprobe API takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub entry: u64,
    pub offset: u64,
    /// Whether the kernel emulates the instruction there (no single-step).
    pub emulated: bool,
    /// Why the site is the entry (no emulated instruction found in time),
    /// or which instruction it is.
    pub why: String,
}

/// What the programs at one probe site read on entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reads {
    /// The first `args` integer argument registers.
    pub args: u8,
    /// `rsp` and `[rsp]`: the return address (call-site lookup, or a
    /// uretprobe, which hijacks `[rsp]` at the hit).
    pub stack: bool,
}

/// Functions looked up in one file, per (symbol, what is read).
type Sites = HashMap<(String, Reads), Result<Site, String>>;

/// Sites per file content: keyed by GNU build-id where the file has one
/// (the same library under another path or in another container is the
/// same code), else by (dev, inode, size, mtime).
#[derive(Default)]
pub struct SiteCache {
    by_stat: HashMap<(u64, u64, u64, i64), Arc<Mutex<Sites>>>,
    by_build_id: HashMap<Vec<u8>, Arc<Mutex<Sites>>>,
}

impl SiteCache {
    /// Sites of `syms` (name, what its programs read) in
    /// `file`; the file is read and decoded once for all of them.
    pub fn sites(&mut self, file: &Path, syms: &[(&str, Reads)]) -> Vec<Result<Site, String>> {
        use std::os::unix::fs::MetadataExt;
        let md = match std::fs::metadata(file) {
            Ok(m) => m,
            Err(e) => return syms.iter().map(|_| Err(e.to_string())).collect(),
        };
        let key = (
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime_nsec() + md.mtime() * 1_000_000_000,
        );
        let known = self.by_stat.get(&key).cloned();
        let missing = |c: &Sites| {
            syms.iter()
                .any(|&(s, a)| !c.contains_key(&(s.to_string(), a)))
        };
        let entry = match known {
            Some(c) if !missing(&c.lock().expect("site cache")) => c,
            known => {
                let data = match std::fs::read(file) {
                    Ok(d) => d,
                    Err(e) => return syms.iter().map(|_| Err(e.to_string())).collect(),
                };
                let obj = match object::File::parse(&*data) {
                    Ok(o) => o,
                    Err(e) => return syms.iter().map(|_| Err(e.to_string())).collect(),
                };
                let c = known.unwrap_or_else(|| {
                    let bid = obj.build_id().ok().flatten().map(<[u8]>::to_vec);
                    match bid {
                        Some(b) => self.by_build_id.entry(b).or_default().clone(),
                        None => Arc::default(),
                    }
                });
                {
                    let mut m = c.lock().expect("site cache");
                    for &(s, a) in syms {
                        m.entry((s.to_string(), a))
                            .or_insert_with(|| find_site(&obj, &data, s, a));
                    }
                }
                self.by_stat.insert(key, c.clone());
                c
            }
        };
        let m = entry.lock().expect("site cache");
        syms.iter()
            .map(|&(s, a)| m[&(s.to_string(), a)].clone())
            .collect()
    }
}

/// The function `name` in `obj`: (virtual address, size, file offset).
fn lookup(obj: &object::File, name: &str) -> Option<(u64, u64, u64)> {
    let sym = obj
        .dynamic_symbols()
        .chain(obj.symbols())
        .filter(|s| s.is_definition() && s.kind() == SymbolKind::Text)
        .find(|s| s.name().is_ok_and(|n| n == name))?;
    let va = sym.address();
    let sec = obj.section_by_index(sym.section_index()?).ok()?;
    let (off, _) = sec.file_range()?;
    Some((va, sym.size(), va.checked_sub(sec.address())? + off))
}

/// How many bytes of a function are decoded to find the branch targets
/// inside it (a jump back to a moved site would run the probe again).
const MAX_FN_BYTES: u64 = 64 * 1024;
/// Straight-line instructions looked at before giving up.
const MAX_PREFIX: usize = 16;

fn find_site(obj: &object::File, data: &[u8], name: &str, reads: Reads) -> Result<Site, String> {
    let (va, size, off) = lookup(obj, name).ok_or_else(|| format!("no symbol {name}"))?;
    let entry = |why: &str| Site {
        entry: off,
        offset: off,
        emulated: false,
        why: why.to_string(),
    };
    if obj.architecture() != object::Architecture::X86_64 {
        return Ok(entry("not x86-64"));
    }
    if size == 0 {
        return Ok(entry("symbol has no size"));
    }
    let end = off
        .checked_add(size.min(MAX_FN_BYTES))
        .filter(|&e| e as usize <= data.len())
        .ok_or_else(|| format!("{name} lies outside the file"))?;
    let code = &data[off as usize..end as usize];
    let at = choose(code, va, reads);
    Ok(match at {
        Ok((delta, what)) => Site {
            entry: off,
            offset: off + delta,
            emulated: true,
            why: what,
        },
        Err(why) => entry(&why),
    })
}

/// The x86-64 registers the first `args` integer arguments arrive in.
const ARG_REGS: [iced_x86::Register; 6] = {
    use iced_x86::Register::*;
    [RDI, RSI, RDX, RCX, R8, R9]
};

/// Picks the probe site in `code` (a function at virtual address `va`):
/// Ok((offset from entry, the instruction)) or Err(why +0).
pub fn choose(code: &[u8], va: u64, reads: Reads) -> Result<(u64, String), String> {
    use iced_x86::{
        Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, OpKind, Register,
    };
    let decode = || Decoder::with_ip(64, code, va, DecoderOptions::NONE);
    // Direct branch targets inside the function: a site must come before
    // every one of them (a path into the middle bypasses the entry).
    let end = va + code.len() as u64;
    let first_target = decode()
        .into_iter()
        .filter(|i| {
            !i.is_invalid()
                && matches!(i.op0_kind(), OpKind::NearBranch64)
                && i.flow_control() != FlowControl::Call
        })
        .map(|i| i.near_branch64())
        .filter(|&t| t > va && t < end)
        .min()
        .unwrap_or(u64::MAX);
    let mut regs: Vec<Register> = ARG_REGS[..usize::from(reads.args.min(6))].to_vec();
    if reads.stack {
        regs.push(Register::RSP);
    }
    let mut info = InstructionInfoFactory::new();
    for i in decode().into_iter().take(MAX_PREFIX) {
        if i.is_invalid() {
            return Err("undecodable instruction".into());
        }
        let delta = i.ip() - va;
        if i.ip() >= first_target {
            return Err(format!("a branch inside the function lands at +{delta:#x}"));
        }
        let bytes = &code[delta as usize..delta as usize + i.len()];
        if let Some(what) = emulated(bytes) {
            return Ok((delta, what.to_string()));
        }
        if i.flow_control() != FlowControl::Next {
            return Err(format!(
                "control flow at +{delta:#x} before an emulated instruction"
            ));
        }
        let inf = info.info(&i);
        let writes = |a: OpAccess| {
            matches!(
                a,
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        };
        if let Some(r) = inf
            .used_registers()
            .iter()
            .find(|r| writes(r.access()) && regs.contains(&r.register().full_register()))
        {
            return Err(format!(
                "+{delta:#x} writes {:?}, which the program reads",
                r.register()
            ));
        }
        // Any store might be to [rsp] (the return address).
        if reads.stack && inf.used_memory().iter().any(|m| writes(m.access())) {
            return Err(format!("+{delta:#x} writes memory"));
        }
    }
    Err("no emulated instruction early enough".into())
}

/// Whether the x86-64 kernel emulates `b` (one whole instruction) at a
/// uprobe instead of single-stepping it (arch/x86/kernel/uprobes.c:
/// branch_setup_xol_ops, push_setup_xol_ops; nop forms in 6.x). Prefixed
/// branches are left out (the kernel refuses a 0x66 one).
fn emulated(b: &[u8]) -> Option<&'static str> {
    Some(match b {
        [0x50..=0x57] | [0x41, 0x50..=0x57] => "push reg",
        [0xe8, _, _, _, _] => "call rel32",
        [0xe9, _, _, _, _] => "jmp rel32",
        [0xeb, _] => "jmp rel8",
        [0x70..=0x7f, _] => "jcc rel8",
        [0x0f, 0x80..=0x8f, _, _, _, _] => "jcc rel32",
        [0x90] => "nop",
        [0x0f, 0x1f, ..] => "nopl",
        [0x66, 0x0f, 0x1f, ..] => "nopw",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: u8) -> Reads {
        Reads { args, stack: true }
    }

    #[test]
    fn glibc_mutex_lock_prologue_moves_to_its_jcc() {
        // glibc 2.36 pthread_mutex_lock: mov 0x10(%rdi),%eax; mov %eax,%edx;
        // and $0x17f,%edx; and $0x7c,%eax; jne ...
        let code = [
            0x8b, 0x47, 0x10, 0x89, 0xc2, 0x81, 0xe2, 0x7f, 0x01, 0x00, 0x00, 0x83, 0xe0, 0x7c,
            0x0f, 0x85, 0xac, 0x00, 0x00, 0x00, 0xc3,
        ];
        assert_eq!(choose(&code, 0x1000, r(1)).unwrap().0, 0xe);
    }

    #[test]
    fn writing_an_argument_the_program_reads_keeps_the_entry() {
        // mov $1,%esi; jmp: fine for a 1-argument program, not for 2.
        let code = [0xbe, 0x01, 0x00, 0x00, 0x00, 0xe9, 0, 0, 0, 0];
        assert_eq!(choose(&code, 0x1000, r(1)).unwrap().0, 5);
        assert!(choose(&code, 0x1000, r(2)).is_err());
    }

    #[test]
    fn endbr64_then_push_moves_past_endbr() {
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3];
        assert_eq!(choose(&code, 0, r(2)).unwrap(), (4, "push reg".to_string()));
    }

    #[test]
    fn stack_and_memory_writes_keep_the_entry() {
        // sub $8,%rsp; push %rbx
        let sub = [0x48, 0x83, 0xec, 0x08, 0x53];
        assert!(choose(&sub, 0, r(0)).is_err());
        // mov %eax,(%rdi); push %rbx
        assert!(choose(&[0x89, 0x07, 0x53], 0, r(0)).is_err());
        // ... unless the programs there read no stack (an unlock probe)
        let no_stack = Reads {
            args: 1,
            stack: false,
        };
        assert_eq!(choose(&sub, 0, no_stack).unwrap().0, 4);
    }

    #[test]
    fn a_branch_back_into_the_prologue_keeps_the_entry() {
        // 0: mov (%rdi),%eax; 2: push %rbx; 3: jmp 2 (back to the push)
        let code = [0x8b, 0x07, 0x53, 0xeb, 0xfd];
        assert!(choose(&code, 0, r(1)).is_err());
    }

    #[test]
    fn this_machines_libc_lock_functions_have_emulated_sites() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !cfg!(target_arch = "x86_64") || !libc.exists() {
            crate::testenv::missing("no x86_64 glibc at /lib/x86_64-linux-gnu/libc.so.6");
            return;
        }
        let mut c = SiteCache::default();
        let s = c.sites(
            libc,
            &[("pthread_mutex_lock", r(1)), ("nonexistent_fn", r(1))],
        );
        let lock = s[0].as_ref().unwrap();
        assert!(lock.offset >= lock.entry, "{lock:?}");
        assert!(s[1].is_err());
        // cached: same answer without reading again
        assert_eq!(c.sites(libc, &[("pthread_mutex_lock", r(1))])[0], s[0]);
    }
}
