//! Data addresses named as the source spells them, from DWARF: the global
//! or static variable an address is in, and the path to it through array
//! elements and struct members (`table_locks[2]`, `bank.accounts[3].lock`),
//! as gdb's `info symbol` + `print &...` would show it. A lock in heap
//! memory that a global pointer points to is named through that pointer
//! (`acct->lock`, `accounts[2]->lock`).
//!
//! Parsed once per file (the variables and where their types are); types
//! are read again per lookup, which happens at report time only.

use std::{borrow::Cow, collections::HashMap, path::Path, sync::Arc};

use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitOffset};
use object::{Object, ObjectSection};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// Largest `.debug_info` indexed: a bigger one (a whole runtime's) costs
/// more to walk than a lock name is worth.
const MAX_DEBUG_INFO: u64 = 64 << 20;
/// Most array elements of pointers read when looking for heap objects.
const MAX_SLOTS: usize = 4096;
/// Deepest path followed (arrays of structs of arrays ...).
const MAX_DEPTH: usize = 24;

/// A variable with a static address.
#[derive(Clone, Debug)]
struct Var {
    /// svma of its first byte.
    addr: u64,
    size: u64,
    name: String,
    /// Its unit (offset in `.debug_info`) and type entry.
    unit: usize,
    ty: Option<usize>,
}

/// The variables of one file with DWARF.
pub(super) struct DwarfVars {
    sections: gimli::DwarfSections<Vec<u8>>,
    /// By address.
    vars: Vec<Var>,
    /// Pointers to heap objects, found on first use.
    slots: std::sync::OnceLock<Arc<Vec<Slot>>>,
}

/// A data address named from DWARF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Named {
    /// The variable, as DWARF names it (without its namespace).
    pub var: String,
    /// svma of the variable.
    pub start: u64,
    /// The element and member path in it: `[2]`, `.accounts[3].lock`.
    pub path: String,
    /// Bytes from the start of what `var` + `path` names.
    pub rest: u64,
}

/// Where a pointer that may point to a heap object lives: the path that
/// names it (`acct`, `accounts[2]`), the svma of the pointer, and the
/// pointee's type.
#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub path: String,
    pub svma: u64,
    unit: usize,
    pointee: usize,
    /// The pointee's size in bytes.
    pub size: u64,
}

/// Type names whose insides are not named: the locks themselves (a futex
/// word inside `pthread_cond_t` is the condvar, not `c.__data.__g_signals`).
fn opaque(name: &str) -> bool {
    name.starts_with("__")
        || name.starts_with("pthread_")
        || matches!(
            name,
            "sem_t"
                | "mtx_t"
                | "cnd_t"
                | "once_flag"
                | "mutex"
                | "recursive_mutex"
                | "timed_mutex"
                | "recursive_timed_mutex"
                | "shared_mutex"
                | "shared_timed_mutex"
                | "condition_variable"
                | "condition_variable_any"
                | "counting_semaphore"
                | "binary_semaphore"
                | "latch"
                | "barrier"
        )
        || ["Mutex<", "RwLock<", "Condvar", "Once", "Futex"]
            .iter()
            .any(|p| name.starts_with(p))
}

impl DwarfVars {
    /// The DWARF of the file at `path` (or of its separate debug file,
    /// found by build-id under `debug_dirs`). None: no usable DWARF.
    pub fn load(path: &Path, build_id: &str, debug_dirs: &[&str]) -> Option<DwarfVars> {
        if let Some(v) = Self::from_file(path) {
            return Some(v);
        }
        if build_id.len() > 2 {
            for d in debug_dirs {
                let p = format!("{d}/.build-id/{}/{}.debug", &build_id[..2], &build_id[2..]);
                if let Some(v) = Self::from_file(Path::new(&p)) {
                    return Some(v);
                }
            }
        }
        None
    }

    fn from_file(path: &Path) -> Option<DwarfVars> {
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let info = file.section_by_name(".debug_info")?;
        if info.size() == 0 || info.size() > MAX_DEBUG_INFO {
            return None;
        }
        let sections = gimli::DwarfSections::load(|id| -> Result<Vec<u8>, ()> {
            Ok(file
                .section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
                .map(Cow::into_owned)
                .unwrap_or_default())
        })
        .ok()?;
        let mut v = DwarfVars {
            sections,
            vars: Vec::new(),
            slots: Default::default(),
        };
        v.vars = v.index().ok()?;
        v.vars.sort_by_key(|x| (x.addr, std::cmp::Reverse(x.size)));
        if v.vars.is_empty() {
            return None;
        }
        Some(v)
    }

    fn dwarf(&self) -> gimli::Dwarf<R<'_>> {
        self.sections
            .borrow(|s| EndianSlice::new(s.as_slice(), LittleEndian))
    }

    /// Every variable with a static address (`DW_OP_addr`/`DW_OP_addrx`).
    fn index(&self) -> gimli::Result<Vec<Var>> {
        let dwarf = self.dwarf();
        let mut out = Vec::new();
        let mut units = dwarf.units();
        while let Some(h) = units.next()? {
            let Some(uoff) = h.debug_info_offset() else {
                continue;
            };
            let unit = dwarf.unit(h)?;
            let mut cur = unit.entries();
            while let Some(e) = cur.next_dfs()? {
                if e.tag() != gimli::DW_TAG_variable {
                    continue;
                }
                let Some(AttributeValue::Exprloc(expr)) = e.attr_value(gimli::DW_AT_location)
                else {
                    continue;
                };
                let Some(addr) = static_addr(&dwarf, &unit, expr) else {
                    continue;
                };
                // A definition of a declared member (C++ statics) names
                // itself through its declaration.
                let decl = match e.attr_value(gimli::DW_AT_specification) {
                    Some(AttributeValue::UnitRef(o)) => unit.entry(o).ok(),
                    _ => None,
                };
                let name = e
                    .attr_value(gimli::DW_AT_name)
                    .or_else(|| decl.as_ref()?.attr_value(gimli::DW_AT_name))
                    .and_then(|a| dwarf.attr_string(&unit, a).ok())
                    .and_then(|s| s.to_string().ok().map(str::to_owned));
                let Some(name) = name else { continue };
                let ty = type_ref(e).or_else(|| type_ref(decl.as_ref()?));
                let size = ty.and_then(|t| byte_size(&unit, t, 0)).unwrap_or(0);
                if addr == 0 || size == 0 {
                    continue;
                }
                out.push(Var {
                    addr,
                    size,
                    name,
                    unit: uoff.0,
                    ty: ty.map(|t| t.0),
                });
            }
        }
        Ok(out)
    }

    /// The variable containing svma `addr`, and the path to `addr` in it.
    pub fn name(&self, addr: u64) -> Option<Named> {
        let i = self.vars.partition_point(|v| v.addr <= addr);
        // The innermost (last starting) variable that contains it.
        let v = self.vars[..i]
            .iter()
            .rev()
            .take(16)
            .find(|v| addr < v.addr.saturating_add(v.size))?;
        let off = addr - v.addr;
        let (path, rest) = match v.ty {
            Some(ty) => self.path(v.unit, ty, String::new(), off),
            None => (String::new(), off),
        };
        Some(Named {
            var: v.name.clone(),
            start: v.addr,
            path,
            rest,
        })
    }

    /// Follows `off` into type `ty` of unit `unit`, appending to `path`.
    fn path(&self, unit: usize, ty: usize, mut path: String, mut off: u64) -> (String, u64) {
        let dwarf = self.dwarf();
        let Some(unit) = unit_at(&dwarf, unit) else {
            return (path, off);
        };
        let mut ty = UnitOffset(ty);
        for _ in 0..MAX_DEPTH {
            let Ok(e) = unit.entry(ty) else { break };
            let tname = name_of(&dwarf, &unit, &e);
            if tname.as_deref().is_some_and(opaque) {
                break;
            }
            match e.tag() {
                gimli::DW_TAG_typedef
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_restrict_type
                | gimli::DW_TAG_atomic_type => match type_ref(&e) {
                    Some(t) => ty = t,
                    None => break,
                },
                gimli::DW_TAG_structure_type
                | gimli::DW_TAG_class_type
                | gimli::DW_TAG_union_type => {
                    let Some((name, moff, mty)) = member_at(&dwarf, &unit, ty, off) else {
                        break;
                    };
                    if let Some(n) = name {
                        path.push('.');
                        path.push_str(&n);
                    }
                    off -= moff;
                    ty = mty;
                }
                gimli::DW_TAG_array_type => {
                    let Some(elem) = type_ref(&e) else { break };
                    let Some(esize) = byte_size(&unit, elem, 0).filter(|&s| s > 0) else {
                        break;
                    };
                    let dims = dims(&unit, ty);
                    for k in 0..dims.len() {
                        // Bytes per step of dimension k.
                        let stride = dims[k + 1..]
                            .iter()
                            .map(|d| d.unwrap_or(1))
                            .fold(esize, u64::saturating_mul)
                            .max(1);
                        let i = off / stride;
                        if dims[k].is_some_and(|n| i >= n) {
                            return (path, off);
                        }
                        path.push_str(&format!("[{i}]"));
                        off -= i * stride;
                    }
                    ty = elem;
                }
                _ => break,
            }
        }
        (path, off)
    }

    /// Pointer variables (and arrays of them) whose pointee has a known
    /// size: where a heap object may be reachable from.
    pub fn slots(&self) -> Arc<Vec<Slot>> {
        self.slots
            .get_or_init(|| Arc::new(self.find_slots()))
            .clone()
    }

    fn find_slots(&self) -> Vec<Slot> {
        let dwarf = self.dwarf();
        let mut out = Vec::new();
        let mut units: HashMap<usize, Option<gimli::Unit<R<'_>>>> = HashMap::new();
        for v in &self.vars {
            if out.len() >= MAX_SLOTS {
                break;
            }
            let Some(ty) = v.ty else { continue };
            let Some(unit) = units
                .entry(v.unit)
                .or_insert_with(|| unit_at(&dwarf, v.unit))
                .as_ref()
            else {
                continue;
            };
            let ty = strip(unit, UnitOffset(ty));
            let Ok(e) = unit.entry(ty) else { continue };
            let (count, ptr) = match e.tag() {
                gimli::DW_TAG_pointer_type => (None, ty),
                gimli::DW_TAG_array_type => {
                    let Some(elem) = type_ref(&e).map(|t| strip(unit, t)) else {
                        continue;
                    };
                    let d = dims(unit, ty);
                    if d.len() != 1 {
                        continue;
                    }
                    match (d[0], unit.entry(elem).map(|x| x.tag())) {
                        (Some(n), Ok(gimli::DW_TAG_pointer_type)) => (Some(n), elem),
                        _ => continue,
                    }
                }
                _ => continue,
            };
            let Some(pointee) = unit.entry(ptr).ok().and_then(|p| type_ref(&p)) else {
                continue;
            };
            let pointee = strip_cv(unit, pointee);
            let Some(size) = byte_size(unit, pointee, 0).filter(|&s| s > 1) else {
                continue;
            };
            match count {
                None => out.push(Slot {
                    path: v.name.clone(),
                    svma: v.addr,
                    unit: v.unit,
                    pointee: pointee.0,
                    size,
                }),
                Some(n) => {
                    for i in 0..n.min((MAX_SLOTS - out.len()) as u64) {
                        out.push(Slot {
                            path: format!("{}[{i}]", v.name),
                            svma: v.addr + 8 * i,
                            unit: v.unit,
                            pointee: pointee.0,
                            size,
                        });
                    }
                }
            }
        }
        out
    }

    /// The path of `off` bytes into what `slot` points to: `acct->lock`,
    /// `*m`.
    pub fn through(&self, slot: &Slot, off: u64) -> (String, u64) {
        let (p, rest) = self.path(slot.unit, slot.pointee, String::new(), off);
        let named = match p.strip_prefix('.') {
            Some(m) => format!("{}->{m}", slot.path),
            None if p.is_empty() => format!("*{}", slot.path),
            None => format!("{}{p}", slot.path),
        };
        (named, rest)
    }
}

fn unit_at<'a>(dwarf: &gimli::Dwarf<R<'a>>, off: usize) -> Option<gimli::Unit<R<'a>>> {
    let h = dwarf
        .debug_info
        .header_from_offset(gimli::DebugInfoOffset(off))
        .ok()?;
    dwarf.unit(h).ok()
}

/// The address a location expression gives, if it is a plain static one.
fn static_addr(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    expr: gimli::Expression<R<'_>>,
) -> Option<u64> {
    let mut ops = expr.operations(unit.encoding());
    let op = ops.next().ok()??;
    // Exactly one operation: `DW_OP_addr X; DW_OP_stack_value` and TLS
    // (`DW_OP_form_tls_address`) are not data at a static address.
    if ops.next().ok()?.is_some() {
        return None;
    }
    match op {
        gimli::Operation::Address { address } => Some(address),
        gimli::Operation::AddressIndex { index } => dwarf.address(unit, index).ok(),
        _ => None,
    }
}

fn type_ref(e: &gimli::DebuggingInformationEntry<R<'_>>) -> Option<UnitOffset> {
    match e.attr_value(gimli::DW_AT_type) {
        Some(AttributeValue::UnitRef(o)) => Some(o),
        _ => None,
    }
}

fn name_of(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    e: &gimli::DebuggingInformationEntry<R<'_>>,
) -> Option<String> {
    let a = e.attr_value(gimli::DW_AT_name)?;
    let s = dwarf.attr_string(unit, a).ok()?;
    s.to_string().ok().map(str::to_owned)
}

/// Follows typedefs and qualifiers.
fn strip(unit: &gimli::Unit<R<'_>>, mut ty: UnitOffset) -> UnitOffset {
    for _ in 0..MAX_DEPTH {
        let Ok(e) = unit.entry(ty) else { break };
        match e.tag() {
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => match type_ref(&e) {
                Some(t) => ty = t,
                None => break,
            },
            _ => break,
        }
    }
    ty
}

/// Follows qualifiers only (a typedef keeps its name: `pthread_mutex_t`).
fn strip_cv(unit: &gimli::Unit<R<'_>>, mut ty: UnitOffset) -> UnitOffset {
    for _ in 0..MAX_DEPTH {
        let Ok(e) = unit.entry(ty) else { break };
        match e.tag() {
            gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => match type_ref(&e) {
                Some(t) => ty = t,
                None => break,
            },
            _ => break,
        }
    }
    ty
}

/// A type's size in bytes.
fn byte_size(unit: &gimli::Unit<R<'_>>, ty: UnitOffset, depth: usize) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    let e = unit.entry(ty).ok()?;
    if let Some(s) = e
        .attr_value(gimli::DW_AT_byte_size)
        .and_then(|a| a.udata_value())
    {
        return Some(s);
    }
    match e.tag() {
        gimli::DW_TAG_array_type => {
            let elem = byte_size(unit, type_ref(&e)?, depth + 1)?;
            dims(unit, ty)
                .iter()
                .try_fold(elem, |acc, d| Some(acc.saturating_mul((*d)?)))
        }
        gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => Some(8),
        _ => byte_size(unit, type_ref(&e)?, depth + 1),
    }
}

/// An array type's dimensions, outermost first (None: unknown count).
fn dims(unit: &gimli::Unit<R<'_>>, ty: UnitOffset) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    let Ok(mut tree) = unit.entries_tree(Some(ty)) else {
        return out;
    };
    let Ok(root) = tree.root() else { return out };
    let mut children = root.children();
    while let Ok(Some(c)) = children.next() {
        let e = c.entry();
        if e.tag() != gimli::DW_TAG_subrange_type {
            continue;
        }
        let count = e
            .attr_value(gimli::DW_AT_count)
            .and_then(|a| a.udata_value())
            .or_else(|| {
                let ub = e.attr_value(gimli::DW_AT_upper_bound)?.udata_value()?;
                let lb = e
                    .attr_value(gimli::DW_AT_lower_bound)
                    .and_then(|a| a.udata_value())
                    .unwrap_or(0);
                // An unknown bound is written as -1 (all ones).
                (ub != u64::MAX && ub != u32::MAX as u64).then(|| ub + 1 - lb.min(ub + 1))
            });
        out.push(count);
    }
    out
}

/// The member of aggregate `ty` that holds byte `off`: its name (None for
/// an anonymous struct or union), offset and type.
fn member_at(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    ty: UnitOffset,
    off: u64,
) -> Option<(Option<String>, u64, UnitOffset)> {
    let union = unit.entry(ty).ok()?.tag() == gimli::DW_TAG_union_type;
    let mut tree = unit.entries_tree(Some(ty)).ok()?;
    let root = tree.root().ok()?;
    let mut children = root.children();
    // A union's members overlap: the lock among them, else the largest.
    let mut best: Option<(bool, u64, Option<String>, u64, UnitOffset)> = None;
    while let Ok(Some(c)) = children.next() {
        let e = c.entry();
        if e.tag() != gimli::DW_TAG_member && e.tag() != gimli::DW_TAG_inheritance {
            continue;
        }
        // Bit-fields are not where a lock lives.
        if e.attr(gimli::DW_AT_bit_size).is_some() || e.attr(gimli::DW_AT_data_bit_offset).is_some()
        {
            continue;
        }
        let moff = match e.attr_value(gimli::DW_AT_data_member_location) {
            Some(a) => match a.udata_value() {
                Some(o) => o,
                None => continue,
            },
            // A union's members all start at 0.
            None => 0,
        };
        let Some(mty) = type_ref(e) else { continue };
        let Some(size) = byte_size(unit, mty, 0) else {
            continue;
        };
        if moff <= off && off < moff.saturating_add(size) {
            let name = if e.tag() == gimli::DW_TAG_inheritance {
                None
            } else {
                name_of(dwarf, unit, e)
            };
            if !union {
                return Some((name, moff, mty));
            }
            let lock = is_opaque(dwarf, unit, mty);
            if best.as_ref().is_none_or(|b| (lock, size) > (b.0, b.1)) {
                best = Some((lock, size, name, moff, mty));
            }
        }
    }
    best.map(|b| (b.2, b.3, b.4))
}

/// Whether a type, through its typedefs and qualifiers, is named as a lock.
fn is_opaque(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>, mut ty: UnitOffset) -> bool {
    for _ in 0..MAX_DEPTH {
        let Ok(e) = unit.entry(ty) else { return false };
        if name_of(dwarf, unit, &e).as_deref().is_some_and(opaque) {
            return true;
        }
        match type_ref(&e) {
            Some(t) if e.tag() != gimli::DW_TAG_pointer_type => ty = t,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::ObjectSymbol;

    /// Compiles `src` (C, or C++ when `cxx`) and returns its path and the
    /// address of each named symbol.
    fn build(src: &str, cxx: bool) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (ext, cc) = if cxx { ("cc", "g++") } else { ("c", "gcc") };
        let c = dir.path().join(format!("t.{ext}"));
        std::fs::write(&c, src).unwrap();
        let exe = dir.path().join("t");
        let st = std::process::Command::new(cc)
            .args(["-O2", "-g", "-pthread", "-o"])
            .arg(&exe)
            .arg(&c)
            .status()
            .expect("compiler");
        assert!(st.success());
        (dir, exe)
    }

    fn sym(exe: &Path, name: &str) -> u64 {
        let data = std::fs::read(exe).unwrap();
        let f = object::File::parse(&*data).unwrap();
        f.symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .address()
    }

    fn named(d: &DwarfVars, addr: u64) -> (String, u64) {
        let n = d.name(addr).expect("named");
        (n.var + &n.path, n.rest)
    }

    const C: &str = r#"
#include <pthread.h>
#include <semaphore.h>
struct account { long balance; pthread_mutex_t lock; };
struct bank { int open; struct account accounts[4]; };
struct grid { char tag; union { int raw; pthread_rwlock_t rw; }; pthread_mutex_t cells[2][3]; };
pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t c = PTHREAD_COND_INITIALIZER;
pthread_mutex_t table_locks[4];
struct bank bank;
struct grid grid;
sem_t s;
struct account *one;
struct account *many[3];
int main(void) { return (int)(long)&a + (int)(long)&c + (int)(long)&table_locks + (int)(long)&bank
    + (int)(long)&grid + (int)(long)&s + (int)(long)one + (int)(long)many[0]; }
"#;

    #[test]
    fn paths_through_arrays_and_members() {
        let (_d, exe) = build(C, false);
        let d = DwarfVars::load(&exe, "", &[]).expect("DWARF");
        let m = std::mem::size_of::<libc::pthread_mutex_t>() as u64;
        assert_eq!(named(&d, sym(&exe, "a")), ("a".into(), 0));
        // A futex word inside a primitive is the primitive (+ offset).
        assert_eq!(named(&d, sym(&exe, "c") + 8), ("c".into(), 8));
        assert_eq!(named(&d, sym(&exe, "s")), ("s".into(), 0));
        let t = sym(&exe, "table_locks");
        assert_eq!(named(&d, t), ("table_locks[0]".into(), 0));
        assert_eq!(named(&d, t + 2 * m), ("table_locks[2]".into(), 0));
        assert_eq!(named(&d, t + 2 * m + 4), ("table_locks[2]".into(), 4));
        let b = sym(&exe, "bank");
        // struct account is 48 bytes, lock at 8; accounts at 8.
        assert_eq!(
            named(&d, b + 8 + 3 * 48 + 8),
            ("bank.accounts[3].lock".into(), 0)
        );
        assert_eq!(
            named(&d, b + 8 + 48),
            ("bank.accounts[1].balance".into(), 0)
        );
        assert_eq!(named(&d, b), ("bank.open".into(), 0));
        let g = sym(&exe, "grid");
        // An anonymous union adds no name.
        assert_eq!(named(&d, g + 8), ("grid.rw".into(), 0));
        let cells = g + 8 + std::mem::size_of::<libc::pthread_rwlock_t>() as u64;
        assert_eq!(named(&d, cells + 4 * m), ("grid.cells[1][1]".into(), 0));
        assert_eq!(
            named(&d, cells + 5 * m + 16),
            ("grid.cells[1][2]".into(), 16)
        );
        // Pointers are where heap objects are reached from.
        let slots = d.slots();
        let one = slots.iter().find(|s| s.path == "one").expect("one");
        assert_eq!(one.size, 48);
        assert_eq!(d.through(one, 8), ("one->lock".into(), 0));
        assert_eq!(d.through(one, 0), ("one->balance".into(), 0));
        let many: Vec<&str> = slots
            .iter()
            .filter(|s| s.path.starts_with("many"))
            .map(|s| s.path.as_str())
            .collect();
        assert_eq!(many, ["many[0]", "many[1]", "many[2]"]);
        assert_eq!(
            d.through(slots.iter().find(|s| s.path == "many[2]").unwrap(), 12),
            ("many[2]->lock".into(), 4)
        );
    }

    #[test]
    fn no_dwarf_is_none() {
        let exe = std::env::temp_dir().join("observer-dwarf-none");
        std::fs::write(&exe, b"not an elf").unwrap();
        assert!(DwarfVars::load(&exe, "", &[]).is_none());
        assert!(DwarfVars::load(Path::new("/nonexistent"), "abcdef", &["/nonexistent"]).is_none());
    }
}
