//! Typed reads of a live interpreter's objects. Every pointer comes from a
//! process that keeps running, so every read may fail or be stale: callers
//! validate what they get (type, size bounds) and treat `None` as "unknown".

use std::{cell::RefCell, collections::HashMap};

use super::layout::{Attrs, HEAPTYPE, INLINE_VALUES, Layout, MANAGED_DICT};

/// Target memory. The live implementation uses process_vm_readv; tests use
/// a map of regions.
pub trait Mem {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>>;

    /// Where ELF section `name` is loaded: in the first module the target
    /// maps whose file name contains `files[0]`, else `files[1]`, ...
    /// (memory that is not a live process's has none).
    fn section(&self, _name: &str, _files: &[&str]) -> Option<u64> {
        None
    }
}

pub struct Live(pub u32);

/// process_vm_readv calls made by live readers (the cost of a Python read).
pub static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Mem for Live {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if addr < 4096 {
            return None;
        }
        READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::source::snapshot::read_mem(self.0, addr, len)
    }

    fn section(&self, name: &str, files: &[&str]) -> Option<u64> {
        super::section::find(self.0, name, files)
    }
}

/// A live process's memory read a page at a time and kept for one walk.
/// A hung thread's frames, code objects and strings sit on few pages, so
/// a view costs a read per page touched, not one per field (a 51-thread
/// walk made ~2,900 reads of 8-336 bytes). Pages are never read again:
/// make one per view, never keep it across views.
pub struct Paged {
    pid: u32,
    pages: RefCell<HashMap<u64, Option<std::rc::Rc<[u8]>>>>,
}

const PAGE: u64 = 4096;
/// No user address of a 64-bit process reaches this (57-bit user space).
const USER_END: u64 = 1 << 57;
/// Reads larger than this go straight to the target (no page copies).
const PAGED_MAX: usize = 4 * PAGE as usize;

impl Paged {
    pub fn new(pid: u32) -> Self {
        Paged {
            pid,
            pages: RefCell::default(),
        }
    }

    /// Reads the pages `first..first+n` not held yet, in one call per run of
    /// missing pages; a page that cannot be read is remembered as such.
    fn fill(&self, first: u64, n: u64) {
        let mut pages = self.pages.borrow_mut();
        let mut p = first;
        while p < first + n {
            if pages.contains_key(&p) {
                p += PAGE;
                continue;
            }
            let mut end = p + PAGE;
            while end < first + n && !pages.contains_key(&end) {
                end += PAGE;
            }
            READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let got = crate::source::snapshot::read_pages(
                self.pid,
                p,
                PAGE as usize,
                ((end - p) / PAGE) as usize,
            );
            let whole = got.len() as u64 / PAGE;
            for i in 0..(end - p) / PAGE {
                let page = (i < whole).then(|| {
                    let at = (i * PAGE) as usize;
                    std::rc::Rc::from(&got[at..at + PAGE as usize])
                });
                pages.insert(p + i * PAGE, page);
            }
            p = end;
        }
    }
}

impl Mem for Paged {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        // Addresses come from the target: none past user space (the page
        // arithmetic below must not wrap).
        let end = addr.checked_add(len as u64).filter(|&e| e <= USER_END)?;
        if addr < 4096 {
            return None;
        }
        if len > PAGED_MAX {
            return Live(self.pid).read(addr, len);
        }
        let first = addr & !(PAGE - 1);
        self.fill(first, end.div_ceil(PAGE) * PAGE - first);
        let pages = self.pages.borrow();
        let mut out = Vec::with_capacity(len);
        let mut a = addr;
        while a < end {
            let page = pages.get(&(a & !(PAGE - 1)))?.as_ref()?;
            let off = (a % PAGE) as usize;
            let take = (PAGE as usize - off).min((end - a) as usize);
            out.extend_from_slice(&page[off..off + take]);
            a += take as u64;
        }
        Some(out)
    }

    fn section(&self, name: &str, files: &[&str]) -> Option<u64> {
        super::section::find(self.pid, name, files)
    }
}

/// Largest string, tuple or dict the reader accepts (bounds torn reads).
const MAX_STR: u64 = 4096;
const MAX_TUPLE: u64 = 4096;
const MAX_ENTRIES: u64 = 1 << 16;

pub fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    let o = off as usize;
    Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

pub fn i32_at(b: &[u8], off: u64) -> Option<i32> {
    let o = off as usize;
    Some(i32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

pub struct Reader<'a, M: Mem> {
    pub mem: &'a M,
    pub l: &'a Layout,
    type_names: RefCell<HashMap<u64, Option<String>>>,
    strings: RefCell<HashMap<u64, Option<String>>>,
    /// Object headers read in this walk (each slot's object is looked at
    /// several times: as a lock, a bound method, a name's value).
    headers: RefCell<HashMap<u64, Option<(u64, u64)>>>,
}

impl<'a, M: Mem> Reader<'a, M> {
    pub fn new(mem: &'a M, l: &'a Layout) -> Self {
        Reader {
            mem,
            l,
            type_names: RefCell::default(),
            strings: RefCell::default(),
            headers: RefCell::default(),
        }
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.mem.read(addr, len)
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        u64_at(&self.mem.read(addr, 8)?, 0)
    }

    pub fn u8(&self, addr: u64) -> Option<u8> {
        self.mem.read(addr, 1)?.first().copied()
    }

    /// The object a frame or stack slot refers to: 3.14+ tag the low bits
    /// of a `_PyStackRef`; a tagged int (or invalid ref) is no object.
    pub fn stackref(&self, v: u64) -> u64 {
        match self.l.stackref_tag {
            0 => v,
            t if v & t & !1 != 0 => 0,
            t => v & !t,
        }
    }

    /// A plausible object pointer: non-null, aligned.
    pub fn ptr_ok(p: u64) -> bool {
        p >= 4096 && p.is_multiple_of(8) && p < (1 << 56)
    }

    /// (refcount, type) of a live-looking object.
    pub fn header(&self, obj: u64) -> Option<(u64, u64)> {
        if !Self::ptr_ok(obj) {
            return None;
        }
        if let Some(h) = self.headers.borrow().get(&obj) {
            return *h;
        }
        let h = (|| {
            let b = self.mem.read(obj, 16)?;
            let (rc, ty) = (u64_at(&b, 0)?, u64_at(&b, 8)?);
            // Immortal objects (3.12+) have a huge refcount: still > 0.
            (rc > 0 && Self::ptr_ok(ty)).then_some((rc, ty))
        })();
        self.headers.borrow_mut().insert(obj, h);
        h
    }

    pub fn type_of(&self, obj: u64) -> Option<u64> {
        self.header(obj).map(|h| h.1)
    }

    /// `tp_name` of a type object ("_thread.lock", "code", "Bank").
    pub fn type_name(&self, ty: u64) -> Option<String> {
        if let Some(n) = self.type_names.borrow().get(&ty) {
            return n.clone();
        }
        let n = (|| {
            let p = self.u64(ty + self.l.type_name)?;
            let b = self.mem.read(p, 64)?;
            let end = b.iter().position(|&c| c == 0)?;
            String::from_utf8(b[..end].to_vec()).ok()
        })();
        self.type_names.borrow_mut().insert(ty, n.clone());
        n
    }

    pub fn obj_type_name(&self, obj: u64) -> Option<String> {
        self.type_name(self.type_of(obj)?)
    }

    pub fn is_type(&self, obj: u64, name: &str) -> bool {
        self.obj_type_name(obj).as_deref() == Some(name)
    }

    /// A `str` object's text (compact ASCII, Latin-1, UCS-2, UCS-4).
    pub fn string(&self, obj: u64) -> Option<String> {
        if let Some(s) = self.strings.borrow().get(&obj) {
            return s.clone();
        }
        let s = self.read_string(obj);
        self.strings.borrow_mut().insert(obj, s.clone());
        s
    }

    fn read_string(&self, obj: u64) -> Option<String> {
        if !self.is_type(obj, "str") {
            return None;
        }
        let l = self.l;
        let head = self.mem.read(obj, l.compact_size as usize)?;
        let len = u64_at(&head, 16)?;
        if len > MAX_STR {
            return None;
        }
        let state = u32::from_ne_bytes(
            head.get(l.unicode_state as usize..l.unicode_state as usize + 4)?
                .try_into()
                .ok()?,
        );
        let kind = (state >> 2) & 7;
        let compact = (state >> 5) & 1 == 1;
        let ascii = (state >> 6) & 1 == 1;
        if !compact {
            return None;
        }
        let data = if ascii {
            obj + l.ascii_size
        } else {
            obj + l.compact_size
        };
        let b = self
            .mem
            .read(data, (len * u64::from(kind.max(1))) as usize)?;
        match kind {
            1 if ascii => String::from_utf8(b).ok(),
            1 => Some(b.iter().map(|&c| char::from(c)).collect()),
            2 => Some(
                b.chunks_exact(2)
                    .map(|c| u16::from_ne_bytes([c[0], c[1]]) as u32)
                    .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                    .collect(),
            ),
            4 => Some(
                b.chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                    .collect(),
            ),
            _ => None,
        }
    }

    pub fn bytes_obj(&self, obj: u64) -> Option<Vec<u8>> {
        if !self.is_type(obj, "bytes") {
            return None;
        }
        let len = self.u64(obj + 16)?;
        if len > 1 << 20 {
            return None;
        }
        self.mem.read(obj + self.l.bytes_sval, len as usize)
    }

    pub fn tuple(&self, obj: u64) -> Option<Vec<u64>> {
        if !self.is_type(obj, "tuple") {
            return None;
        }
        let n = self.u64(obj + 16)?;
        if n > MAX_TUPLE {
            return None;
        }
        if n == 0 {
            return Some(Vec::new());
        }
        let b = self.mem.read(obj + self.l.tuple_item, n as usize * 8)?;
        Some(b.chunks_exact(8).map(|c| u64_at(c, 0).unwrap()).collect())
    }

    /// A non-negative `int` that fits 64 bits.
    pub fn long(&self, obj: u64) -> Option<u64> {
        if !self.is_type(obj, "int") {
            return None;
        }
        let tag = self.u64(obj + 16)?;
        let (ndigits, negative) = if self.l.minor >= 12 {
            (tag >> 3, tag & 3 == 2)
        } else {
            let size = tag as i64;
            (size.unsigned_abs(), size < 0)
        };
        if negative || ndigits > 3 {
            return None;
        }
        let b = self
            .mem
            .read(obj + self.l.long_digits, ndigits as usize * 4)?;
        let mut v: u128 = 0;
        for (i, c) in b.chunks_exact(4).enumerate() {
            v |= u128::from(u32::from_ne_bytes(c.try_into().ok()?) & 0x3fff_ffff) << (30 * i);
        }
        u64::try_from(v).ok()
    }

    /// Key/value pairs of the entries of a dict keys object, given the
    /// values array of a split table (None: values live in the entries).
    fn keys_entries(&self, keys: u64, values: Option<u64>) -> Option<Vec<(u64, u64)>> {
        let l = self.l;
        let head = self.mem.read(keys, l.keys_indices as usize)?;
        let log2_index_bytes = *head.get(l.keys_log2_index_bytes as usize)?;
        let kind = *head.get(l.keys_kind as usize)?;
        let n = u64_at(&head, l.keys_nentries)?;
        if log2_index_bytes > 40 || n > MAX_ENTRIES {
            return None;
        }
        // `keys` is read from the target: any value, u64::MAX too.
        let entries = keys
            .wrapping_add(l.keys_indices)
            .wrapping_add(1u64 << log2_index_bytes);
        let width = if kind == 0 { 24 } else { 16 };
        let b = self.mem.read(entries, (n * width) as usize)?;
        let vals = match values {
            Some(v) if n > 0 => Some(self.mem.read(v, n as usize * 8)?),
            _ => None,
        };
        let mut out = Vec::new();
        for i in 0..n {
            let e = i * width;
            let (k, v) = if kind == 0 {
                (u64_at(&b, e + 8)?, u64_at(&b, e + 16)?)
            } else {
                (u64_at(&b, e)?, u64_at(&b, e + 8)?)
            };
            let v = match &vals {
                Some(vb) => u64_at(vb, i * 8)?,
                None => v,
            };
            if k != 0 && v != 0 {
                out.push((k, v));
            }
        }
        Some(out)
    }

    /// Entries of a `dict` object.
    pub fn dict(&self, obj: u64) -> Option<Vec<(u64, u64)>> {
        let ty = self.obj_type_name(obj)?;
        if ty != "dict" {
            return None;
        }
        let keys = self.u64(obj + self.l.dict_keys)?;
        let values = self.u64(obj + self.l.dict_values)?;
        let values = (values != 0).then_some(values.wrapping_add(self.l.dictvalues_values));
        self.keys_entries(keys, values)
    }

    /// Entries of a dict whose keys are strings, as (name, value).
    pub fn str_dict(&self, obj: u64) -> Option<Vec<(String, u64)>> {
        Some(
            self.dict(obj)?
                .into_iter()
                .filter_map(|(k, v)| Some((self.string(k)?, v)))
                .collect(),
        )
    }

    /// The attributes of an instance of a Python class (managed dict,
    /// 3.11–3.13 layouts), as (name, value). None for other objects.
    pub fn attrs(&self, obj: u64) -> Option<Vec<(String, u64)>> {
        let l = self.l;
        let ty = self.type_of(obj)?;
        let flags = self.u64(ty + l.type_flags)?;
        if flags & HEAPTYPE == 0 || flags & MANAGED_DICT == 0 {
            return None;
        }
        let cached_keys = || self.u64(ty + l.heaptype_cached_keys).filter(|&k| k != 0);
        let entries = match l.attrs {
            Attrs::ValuesOrDict311 => {
                let values = self.u64(obj - 32)?;
                if values != 0 {
                    self.keys_entries(cached_keys()?, Some(values + l.dictvalues_values))?
                } else {
                    let d = self.u64(obj - 24)?;
                    return if d == 0 {
                        Some(Vec::new())
                    } else {
                        self.str_dict(d)
                    };
                }
            }
            Attrs::DictOrValues312 => {
                let w = self.u64(obj.wrapping_sub(24))?;
                if w & 1 == 1 {
                    // Torn memory: w may be any odd value, u64::MAX too.
                    let values = w.wrapping_add(1).wrapping_add(l.dictvalues_values);
                    self.keys_entries(cached_keys()?, Some(values))?
                } else if w == 0 {
                    return Some(Vec::new());
                } else {
                    return self.str_dict(w);
                }
            }
            Attrs::Inline313 => {
                let d = self.u64(obj.wrapping_sub(24))?;
                if d != 0 {
                    return self.str_dict(d);
                }
                if flags & INLINE_VALUES == 0 {
                    return Some(Vec::new());
                }
                let basic = self.u64(ty + l.type_basicsize)?;
                // A torn type may give any size.
                let values = obj.wrapping_add(basic);
                // PyDictValues: capacity, size, embedded, valid, values[].
                let hdr = self.mem.read(values, 4)?;
                if hdr[3] == 0 {
                    return Some(Vec::new());
                }
                let values = values.wrapping_add(l.dictvalues_values);
                self.keys_entries(cached_keys()?, Some(values))?
            }
        };
        Some(
            entries
                .into_iter()
                .filter_map(|(k, v)| Some((self.string(k)?, v)))
                .collect(),
        )
    }
}

/// The source line of code unit `addrq` in a 3.11+ location table
/// (Objects/locations.md). None when the instruction has no location.
pub fn line_of(table: &[u8], first_line: i32, addrq: u64) -> Option<i32> {
    let mut i = 0usize;
    let mut line = first_line;
    let mut addr = 0u64;
    let next = |i: &mut usize| -> Option<u8> {
        let b = *table.get(*i)?;
        *i += 1;
        Some(b)
    };
    let varint = |i: &mut usize| -> Option<u32> {
        let mut b = next(i)?;
        let mut v = u32::from(b & 63);
        let mut shift = 0;
        while b & 64 != 0 {
            b = next(i)?;
            shift += 6;
            if shift > 30 {
                return None;
            }
            v |= u32::from(b & 63) << shift;
        }
        Some(v)
    };
    let svarint = |i: &mut usize| -> Option<i32> {
        let v = varint(i)?;
        Some(if v & 1 == 1 {
            -((v >> 1) as i32)
        } else {
            (v >> 1) as i32
        })
    };
    while i < table.len() {
        let b = next(&mut i)?;
        if b & 0x80 == 0 {
            return None;
        }
        let code = (b >> 3) & 15;
        let len = u64::from(b & 7) + 1;
        let has_line = match code {
            15 => false,
            14 => {
                // A torn table's deltas may sum past i32: no panic for it.
                line = line.wrapping_add(svarint(&mut i)?);
                varint(&mut i)?;
                varint(&mut i)?;
                varint(&mut i)?;
                true
            }
            13 => {
                line = line.wrapping_add(svarint(&mut i)?);
                true
            }
            10..=12 => {
                line = line.wrapping_add(i32::from(code - 10));
                i += 2;
                true
            }
            _ => {
                i += 1;
                true
            }
        };
        if addrq < addr + len {
            return has_line.then_some(line);
        }
        addr += len;
    }
    None
}

/// One entry of a 3.11+ exception table (Objects/exception_handling_notes.txt),
/// in code units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExcEntry {
    pub start: u64,
    pub end: u64,
    pub target: u64,
    /// Stack items kept below the handler's pushed values.
    pub depth: u64,
    pub lasti: bool,
}

/// Parses `co_exceptiontable`: per entry, varints (6 bits each, most
/// significant first, bit 6 = more) start, length, target, depth<<1|lasti;
/// bit 7 marks an entry's first byte.
pub fn exception_table(t: &[u8]) -> Vec<ExcEntry> {
    let mut out = Vec::new();
    let mut i = 0usize;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..6 {
            let b = *t.get(*i)?;
            *i += 1;
            v = (v << 6) | u64::from(b & 63);
            if b & 64 == 0 {
                return Some(v);
            }
        }
        None
    };
    while i < t.len() {
        if t[i] & 0x80 == 0 {
            break;
        }
        let e = (|| {
            let start = varint(&mut i)?;
            let len = varint(&mut i)?;
            let target = varint(&mut i)?;
            let dl = varint(&mut i)?;
            Some(ExcEntry {
                start,
                end: start + len,
                target,
                depth: dl >> 1,
                lasti: dl & 1 == 1,
            })
        })();
        match e {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

/// The code unit of the instruction that opened the `with` block whose
/// `__exit__` sits at value-stack index `slot`, for a frame at code unit
/// `at`. The block's body is covered by exception-table entries with
/// `lasti` and depth `slot + slots` (`slots`: stack items the block keeps,
/// 1 for a bound `__exit__` before 3.14, 2 for 3.14+'s `__exit__` and its
/// `self`) that share one handler (the `with` cleanup). Of such handlers
/// the one whose body starts last at or before `at` is the innermost block
/// open there (blocks at one depth cannot nest). The opening instruction is
/// `BEFORE_WITH` right before the body (3.11-3.13), or 3.14+'s
/// `LOAD_SPECIAL __enter__` a few units before it (then `CALL` and its
/// inline caches): `open_op` is that opcode, confirmed by `unit_at`.
pub fn with_start(
    table: &[ExcEntry],
    slot: u64,
    slots: u64,
    at: u64,
    unit_at: impl Fn(u64) -> Option<(u8, u8)>,
    open_op: u8,
) -> Option<u64> {
    let mut starts: HashMap<u64, (u64, u64)> = HashMap::new();
    for e in table.iter().filter(|e| e.lasti && e.depth == slot + slots) {
        let s = starts.entry(e.target).or_insert((e.start, e.end));
        s.0 = s.0.min(e.start);
        s.1 = s.1.max(e.end);
    }
    let (first, _) = starts
        .values()
        .filter(|(s, end)| *s <= at && at < *end)
        .max_by_key(|(s, _)| *s)?;
    if slots == 1 {
        let w = first.checked_sub(1)?;
        return (unit_at(w)?.0 == open_op).then_some(w);
    }
    // LOAD_SPECIAL with oparg 0 (`__enter__`), then CALL and its caches.
    (1..=8)
        .filter_map(|k| first.checked_sub(k))
        .find(|&u| unit_at(u) == Some((open_op, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paged reads of this process match its memory, across a page edge;
    /// addresses past user space (torn pointers) are refused, not wrapped.
    #[test]
    fn paged_reads_match_memory_and_refuse_wild_addresses() {
        let data: Vec<u8> = (0..3 * PAGE as usize).map(|i| (i % 251) as u8).collect();
        let at = data.as_ptr() as u64 + PAGE - 5;
        let m = Paged::new(std::process::id());
        let off = (at - data.as_ptr() as u64) as usize;
        assert_eq!(m.read(at, 16).unwrap(), data[off..off + 16]);
        assert_eq!(m.read(at + 8, 4).unwrap(), data[off + 8..off + 12]);
        assert_eq!(m.read(u64::MAX - 3, 8), None);
        assert_eq!(m.read(u64::MAX - 10, 8), None);
        assert_eq!(m.read((1 << 57) - 4, 8), None);
        assert_eq!(m.read(16, 8), None);
    }

    #[test]
    fn location_table() {
        // def f():      (line 1)
        //     x = 1     two units, one-line form delta 1, cols
        //     return x  long form: +1 line, no location entry between
        let table = [
            0x80 | (10 << 3),
            0,
            0, // unit 0 line 1 (short code 10 = +0)... one-line delta 0
            0x80 | (11 << 3) | 1,
            4,
            5,                // units 1-2: line 2
            0x80 | (15 << 3), // unit 3: no location
            0x80 | (13 << 3),
            2, // unit 4: line 3 (svarint +1)
            0x80 | (14 << 3),
            3,
            0,
            0,
            0, // unit 5: line 2 (svarint -1)
        ];
        assert_eq!(line_of(&table, 1, 0), Some(1));
        assert_eq!(line_of(&table, 1, 1), Some(2));
        assert_eq!(line_of(&table, 1, 2), Some(2));
        assert_eq!(line_of(&table, 1, 3), None);
        assert_eq!(line_of(&table, 1, 4), Some(3));
        assert_eq!(line_of(&table, 1, 5), Some(2));
        assert_eq!(line_of(&table, 1, 6), None);
        assert_eq!(line_of(&[0x12], 1, 0), None);
    }

    /// `with a:` / `with b:` nested, as 3.11 compiles it (bytes from
    /// `co_exceptiontable`): outer BEFORE_WITH at unit 7, inner at 17.
    #[test]
    fn with_blocks_from_the_exception_table() {
        let enc = |v: &[u64]| {
            let mut out = Vec::new();
            for (j, &x) in v.iter().enumerate() {
                let mut chunks = vec![x & 63];
                let mut y = x >> 6;
                while y > 0 {
                    chunks.push(y & 63);
                    y >>= 6;
                }
                chunks.reverse();
                let n = chunks.len();
                for (k, c) in chunks.into_iter().enumerate() {
                    let mut b = c as u8;
                    if k + 1 < n {
                        b |= 64;
                    }
                    if j % 4 == 0 && k == 0 {
                        b |= 128;
                    }
                    out.push(b);
                }
            }
            out
        };
        // (start, len, target, depth<<1|lasti)
        let rows: &[[u64; 4]] = &[
            [8, 10, 115, 3],
            [18, 21, 71, 5],
            [40, 2, 43, 4],
            [59, 20, 115, 3],
            [71, 4, 75, 9],
            [79, 23, 115, 3],
            [115, 4, 119, 7],
        ];
        let t = exception_table(&enc(&rows.concat()));
        assert_eq!(t.len(), 7);
        assert_eq!(
            t[1],
            ExcEntry {
                start: 18,
                end: 39,
                target: 71,
                depth: 2,
                lasti: true
            }
        );
        let ops = |u: u64| Some((if u == 7 || u == 17 { 53 } else { 1 }, 0));
        // Inside both blocks: slot 0 is the outer `with`, slot 1 the inner.
        assert_eq!(with_start(&t, 0, 1, 30, ops, 53), Some(7));
        assert_eq!(with_start(&t, 1, 1, 30, ops, 53), Some(17));
        // After the inner block: only the outer one is open.
        assert_eq!(with_start(&t, 0, 1, 90, ops, 53), Some(7));
        assert_eq!(with_start(&t, 1, 1, 90, ops, 53), None);
        // Not a BEFORE_WITH before the body: no answer rather than a guess.
        assert_eq!(with_start(&t, 0, 1, 30, |_| Some((1, 0)), 53), None);
        // 3.14: two slots per block, LOAD_SPECIAL 0 five units before the
        // body (CALL and three caches between).
        let ops14 = |u: u64| Some(if u == 3 || u == 13 { (95, 0) } else { (1, 1) });
        assert_eq!(with_start(&t, 0, 1, 30, ops14, 95), None);
        let t14 = exception_table(&enc(&[8, 10, 115, 5, 18, 21, 71, 9, 59, 20, 115, 5]));
        assert_eq!(with_start(&t14, 0, 2, 30, ops14, 95), Some(3));
        assert_eq!(with_start(&t14, 2, 2, 30, ops14, 95), Some(13));
    }
}
