//! Names of data addresses: the global or heap object a lock lives in.
use super::*;

impl Symbolizer {
    /// See [`data_symbol`].
    pub fn data_symbol(&mut self, pid: u32, addr: u64) -> Option<DataSymbol> {
        let mut p = self.proc(pid, false).ok()?;
        if p.module_of_data(addr).is_none() {
            // Heap, stacks, anonymous memory: no symbol of its own (and no
            // reason to read the maps again for each such lock); perhaps a
            // global pointer of the program points to it.
            if p.mapping_of(addr).is_some_and(|e| !e.is_file()) {
                return self.heap_symbol(pid, addr);
            }
            // Perhaps mapped since we read the maps (dlopen), or read while
            // the process was exiting (its files could not be opened).
            p = self.proc(pid, true).ok()?;
        }
        let m = p.module_of_data(addr)?.clone();
        let svma = m.svma(addr);
        let path = m.open_path.clone()?;
        let src = Source::Elf(bz::source::Elf::new(path));
        let blaze = self.shared.blaze_for(&m);
        let sym = match blaze.symbolize_single(&src, Input::VirtOffset(svma)) {
            Ok(Symbolized::Sym(s)) => Some(s),
            _ => None,
        };
        // DWARF names the variable and the element or member in it; a
        // mangled symbol at the same address names the variable with its
        // namespace (`ns::table`).
        if let Some(n) = self.shared.dwarf_for(&m).and_then(|d| d.name(svma)) {
            let var = match &sym {
                Some(s) if s.addr == n.start && s.name.starts_with("_Z") => {
                    demangle(&s.name).into_owned()
                }
                _ => n.var,
            };
            return Some(DataSymbol {
                name: var + &n.path,
                offset: n.rest,
                module: m.name,
            });
        }
        sym.map(|s| DataSymbol {
            name: demangle(&s.name).into_owned(),
            offset: s.offset as u64,
            module: m.name,
        })
    }

    /// A heap object that a global pointer of the executable (or an array
    /// of them) points to, named through it: `acct->lock`. Needs the
    /// executable's DWARF; CPython processes are skipped (their locks are
    /// named by the Python view, and the interpreter's pointers are not
    /// the program's).
    pub(super) fn heap_symbol(&mut self, pid: u32, addr: u64) -> Option<DataSymbol> {
        if self.offline {
            return None;
        }
        let p = self.proc(pid, false).ok()?;
        if python::looks_like_python(&p.maps) {
            return None;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let exe = exe.to_string_lossy();
        let m = p.modules.iter().find(|m| m.name == *exe)?.clone();
        let d = self.shared.dwarf_for(&m)?;
        let slots = d.slots();
        let (lo, hi) = (
            slots.iter().map(|s| s.svma).min()?,
            slots.iter().map(|s| s.svma + 8).max()?,
        );
        // One read of the span the pointers are in (their .data/.bss).
        if hi - lo > native::MAX_STACK_COPY {
            return None;
        }
        let bytes = native::read_mem(pid, m.bias.wrapping_add(lo), (hi - lo) as usize);
        slots.iter().find_map(|s| {
            let at = (s.svma - lo) as usize;
            let v = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
            let off = addr.checked_sub(v).filter(|&o| v != 0 && o < s.size)?;
            let (name, offset) = d.through(s, off);
            Some(DataSymbol {
                name,
                offset,
                module: m.name.clone(),
            })
        })
    }
}
