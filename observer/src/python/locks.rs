//! Locks on the walk's frames: what a value-stack slot holds (`with`
//! blocks, bound `__exit__`), whether a lock is locked and by whom
//! (`threading` locks and RLocks, `multiprocessing` SemLocks), and the
//! futex word a thread sleeps on for it.

use super::{
    How, PyLockKind, PyWait,
    layout::{LockLayout, RLockLayout},
    reader::{Mem, i32_at, u64_at},
    walk::{MAX_REFCNT, RawThread, Slot, Walk},
};

/// `_multiprocessing.SemLock` (SemLockObject, after PyObject_HEAD): the
/// `sem_t *` handle, `last_tid` (unsigned long, the ident of the last
/// acquirer), `count` (int), `maxvalue` (int), `kind` (int).
const SEMLOCK_HANDLE: u64 = 16;
const SEMLOCK_LAST_TID: u64 = 24;
const SEMLOCK_MAXVALUE: u64 = 36;

impl<M: Mem> Walk<'_, '_, M> {
    pub(super) fn lock_kind(&self, obj: u64) -> Option<PyLockKind> {
        match self.r.obj_type_name(obj)?.as_str() {
            "_thread.lock" => Some(PyLockKind::Lock),
            "_thread.RLock" => Some(PyLockKind::RLock),
            "_multiprocessing.SemLock" => {
                // SemLockObject (Modules/_multiprocessing/semaphore.c, the
                // same 3.11-3.15): kind RECURSIVE_MUTEX (0) is an RLock; a
                // SEMAPHORE (1) of maxvalue 1 a Lock; larger ones are
                // semaphores, which nobody holds.
                let b = self.r.bytes(obj + SEMLOCK_MAXVALUE, 8)?;
                match (i32_at(&b, 4)?, i32_at(&b, 0)?) {
                    (0, _) => Some(PyLockKind::MpRLock),
                    (1, 1) => Some(PyLockKind::MpLock),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The lock value-stack slot `k` refers to, and how. 3.14+ keep a
    /// `with` block's `__exit__` unbound, its `self` in the slot above.
    pub(super) fn slot_lock(&mut self, stack: &[u64], k: usize) -> Option<(u64, PyLockKind, Slot)> {
        let l = self.r.l;
        let v = *stack.get(k)?;
        let (rc, ty) = self.r.header(v)?;
        if let Some(kind) = self.lock_kind(v) {
            return Some((v, kind, Slot::Lock));
        }
        // Bound methods are never immortal: a bigger count is freed memory.
        if rc >= MAX_REFCNT {
            return None;
        }
        let this = || stack.get(k + 1).copied();
        match self.r.type_name(ty)?.as_str() {
            // `_thread.lock.__exit__` (3.14+): PyDescr_COMMON's d_name.
            "method_descriptor" if l.stackref_tag != 0 => {
                let name = self.r.string(self.r.u64(v + 24)?)?;
                let this = this()?;
                let kind = self.lock_kind(this)?;
                (name == "__exit__").then_some((this, kind, Slot::Exit))
            }
            // A Python `__exit__` (Condition, user classes), 3.14+.
            "function" if l.stackref_tag != 0 => {
                let q = self.r.string(self.r.u64(v + l.func_qualname)?)?;
                if !q.ends_with(".__exit__") {
                    return None;
                }
                self.wrapped_lock(this()?)
            }
            "builtin_function_or_method" => {
                let this = self.r.u64(v + l.cfunc_self)?;
                let k = self.lock_kind(this)?;
                let ml = self.r.u64(v + l.cfunc_ml)?;
                let name = self.r.u64(ml)?;
                let b = self.r.bytes(name, 16)?;
                let slot = if b.starts_with(b"__exit__\0") || b.starts_with(b"release\0") {
                    Slot::Exit
                } else {
                    Slot::Other
                };
                Some((this, k, slot))
            }
            "method" => {
                // `with obj:` where obj.__exit__ is Python code wrapping a
                // lock (Condition, user classes): the lock is an attribute.
                let func = self.r.u64(v + l.method_func)?;
                if !self.r.is_type(func, "function") {
                    return None;
                }
                let q = self.r.string(self.r.u64(func + l.func_qualname)?)?;
                if !q.ends_with(".__exit__") {
                    return None;
                }
                let this = self.r.u64(v + l.method_self)?;
                self.wrapped_lock(this)
            }
            _ => None,
        }
    }

    /// The lock an object whose `__exit__` is Python code wraps: an
    /// attribute (`_lock` preferred).
    pub(super) fn wrapped_lock(&mut self, this: u64) -> Option<(u64, PyLockKind, Slot)> {
        let attrs = self.attrs(this)?;
        let mut best = None;
        for (name, a) in attrs {
            if let Some(k) = self.lock_kind(a)
                && (best.is_none() || name == "_lock")
            {
                best = Some((a, k, Slot::Exit));
            }
        }
        best
    }

    /// 3.14+: a `with` entering `lock` keeps its `__exit__` and `self`
    /// just below `__enter__` and the `self` it is called with.
    pub(super) fn exit_below(&mut self, stack: &[u64], k: usize, lock: u64) -> bool {
        self.r.l.stackref_tag != 0
            && (k.saturating_sub(3)..k).any(|j| {
                self.slot_lock(&stack[..k], j)
                    .is_some_and(|(l, _, s)| l == lock && s == Slot::Exit)
            })
    }

    /// The futex word a lock's waiters sleep on.
    pub(super) fn lock_word(&self, lock: u64, kind: PyLockKind) -> u64 {
        match (kind, self.r.l.lock, self.r.l.rlock) {
            // The `sem_t *` handle: glibc's sem_t keeps its value (the
            // futex word) at +0.
            (PyLockKind::MpLock | PyLockKind::MpRLock, _, _) => {
                self.r.u64(lock + SEMLOCK_HANDLE).unwrap_or(0)
            }
            (PyLockKind::Lock, LockLayout::Mutex, _)
            | (PyLockKind::RLock, _, RLockLayout::Recursive) => lock + 16,
            _ => self.r.u64(lock + 16).unwrap_or(0),
        }
    }

    pub(super) fn locked(&self, lock: u64, kind: PyLockKind, ident: u64) -> bool {
        match (kind, self.r.l.lock) {
            (PyLockKind::MpLock | PyLockKind::MpRLock, _) => self
                .semlock_owner(lock)
                .is_some_and(|(o, n)| o == ident && n > 0),
            (PyLockKind::RLock, _) => self
                .rlock_owner(lock)
                .is_some_and(|(o, n)| o == ident && n > 0),
            (PyLockKind::Lock, LockLayout::Sem) => self.r.u8(lock + 32).is_some_and(|b| b != 0),
            (PyLockKind::Lock, LockLayout::Mutex) => {
                self.r.u8(lock + 16).is_some_and(|b| b & 1 != 0)
            }
        }
    }

    /// A SemLock's last acquirer in this process (`last_tid`, an ident)
    /// and `count`: above 0 while that thread holds it (this process's
    /// count; a fork child's copy is zeroed by `_after_fork`).
    pub(super) fn semlock_owner(&self, lock: u64) -> Option<(u64, u64)> {
        let b = self.r.bytes(lock + SEMLOCK_LAST_TID, 12)?;
        let n = i32_at(&b, 8)?;
        Some((u64_at(&b, 0)?, u64::try_from(n).unwrap_or(0)))
    }

    /// A multiprocessing lock is entered through `SemLock.__enter__` (or
    /// `acquire`, the C method itself): the wait belongs to the first frame
    /// outside multiprocessing/synchronize.py, a `with` when that frame
    /// keeps the lock's `__exit__` on its value stack.
    pub(super) fn mp_wait_frame(&mut self, t: &RawThread, w: &mut PyWait) {
        let Some(fi) = t
            .frames
            .iter()
            .position(|f| !f.frame.file.ends_with("multiprocessing/synchronize.py"))
        else {
            return;
        };
        if fi == 0 {
            return;
        }
        w.frame = fi;
        let f = &t.frames[fi];
        let exit = (0..f.stack.len()).any(|k| {
            self.slot_lock(&f.stack, k)
                .is_some_and(|(l, _, s)| l == w.lock && s == Slot::Exit)
        });
        w.how = if exit || f.opcode == Some(self.r.l.before_with) {
            How::With
        } else {
            How::Acquire
        };
    }

    /// The multiprocessing locks (SemLocks) the frames' locals and module
    /// globals are, or hold as an attribute (`_semlock` of a
    /// `multiprocessing.Lock`, `self.lock._semlock` is not followed).
    pub(super) fn mp_locks_in_reach(&mut self, raw: &[RawThread]) -> Vec<(u64, PyLockKind)> {
        let mut values: Vec<u64> = Vec::new();
        let mut dicts: Vec<u64> = Vec::new();
        for f in raw.iter().flat_map(|t| &t.frames) {
            values.extend(f.locals.iter().map(|x| x.1));
            if f.globals != 0 && !dicts.contains(&f.globals) && dicts.len() < 64 {
                dicts.push(f.globals);
            }
        }
        for d in dicts {
            values.extend(
                self.r
                    .str_dict(d)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|x| x.1),
            );
        }
        values.sort_unstable();
        values.dedup();
        let mut out = Vec::new();
        for v in values.into_iter().take(4096) {
            let Some(attrs) = self.attrs(v) else { continue };
            let Some(&(_, sl)) = attrs.iter().find(|(n, _)| n == "_semlock") else {
                continue;
            };
            if let Some(k) = self.lock_kind(sl).filter(|k| k.across_processes()) {
                out.push((sl, k));
            }
        }
        out
    }

    /// An RLock's owner (ident) and how many times it holds it (0: free).
    pub(super) fn rlock_owner(&self, lock: u64) -> Option<(u64, u64)> {
        let b = self.r.bytes(lock + 16, 24)?;
        let (owner, n) = (u64_at(&b, 8)?, u64_at(&b, 16)?);
        match self.r.l.rlock {
            RLockLayout::Sem => Some((owner, n)),
            RLockLayout::Recursive if b[0] & 1 == 0 => Some((0, 0)),
            RLockLayout::Recursive => Some((owner, n.saturating_add(1))),
        }
    }
}
