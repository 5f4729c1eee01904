//! All unsafe decoding of kernel data lives here: ring buffer records and
//! map values, whose layouts come from `observer.h` through bindgen.

use observer_ebpf::bindings::{
    OBS_JS_READ, OBS_WAIT_REGS_OK, OBS_WAIT_WORDS_OK, obs_acquire, obs_agg, obs_agg_key, obs_comm,
    obs_edge, obs_edge_key, obs_epoll, obs_exec, obs_exit_held, obs_hdr, obs_held, obs_hold_cache,
    obs_holder, obs_holder_key, obs_join_state, obs_join_wait, obs_lock_edge, obs_lock_key,
    obs_lock_stats, obs_loop_gap, obs_owner, obs_pthread, obs_pthread_op, obs_rec_kind, obs_spawn,
    obs_stack_sig, obs_task_exit, obs_task_new, obs_task_new_stack, obs_task_rename, obs_wait,
    obs_wait_done,
};
use std::os::raw::c_char;

use crate::event::{Event, ExeImage, PthreadOp, Wait, WaitOrigin};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte type (kind {kind})")]
    Short { kind: u32, len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

// SAFETY: plain C structs of integers and byte arrays (no padding holes
// that matter, no pointers); any bit pattern is a valid value.
unsafe impl aya::Pod for Pod<obs_wait> {}
unsafe impl aya::Pod for Pod<obs_agg_key> {}
unsafe impl aya::Pod for Pod<obs_agg> {}
unsafe impl aya::Pod for Pod<obs_acquire> {}
unsafe impl aya::Pod for Pod<obs_lock_key> {}
unsafe impl aya::Pod for Pod<obs_owner> {}
unsafe impl aya::Pod for Pod<obs_edge_key> {}
unsafe impl aya::Pod for Pod<obs_edge> {}
unsafe impl aya::Pod for Pod<obs_lock_stats> {}
unsafe impl aya::Pod for Pod<obs_holder_key> {}
unsafe impl aya::Pod for Pod<obs_holder> {}
unsafe impl aya::Pod for Pod<obs_epoll> {}
unsafe impl aya::Pod for Pod<obs_comm> {}
unsafe impl aya::Pod for Pod<obs_held> {}
unsafe impl aya::Pod for Pod<obs_stack_sig> {}

/// Wrapper that lets aya maps hold the generated types (the orphan rule
/// forbids implementing aya's trait on them directly).
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
pub struct Pod<T>(pub T);

/// Reads a `T` from the front of `b`, if it is long enough.
fn read<T: Copy>(b: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if b.len() < need {
        return Err(DecodeError::Short {
            kind,
            len: b.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a bindgen struct of plain integers, valid
    // for any bit pattern; read_unaligned copes with ring buffer alignment.
    Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// A note from the daemon's spawn ring (kind, tgid, parent).
pub fn spawn(b: &[u8]) -> Option<obs_spawn> {
    read::<obs_spawn>(b, 0).ok()
}

pub fn cstr(c: &[c_char]) -> String {
    let bytes: Vec<u8> = c
        .iter()
        .take_while(|&&x| x != 0)
        .map(|&x| x as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn wait_from_raw(w: &obs_wait, origin: WaitOrigin) -> Wait {
    let words = if w.flags & OBS_WAIT_WORDS_OK != 0 {
        w.words.to_vec()
    } else {
        Vec::new()
    };
    let regs = w.flags & OBS_WAIT_REGS_OK != 0;
    Wait {
        uaddr: w.uaddr,
        uaddr2: w.uaddr2,
        op: w.op,
        val: w.val,
        start_ns: w.start_ns,
        ip: if regs { w.ip } else { 0 },
        sp: if regs { w.sp } else { 0 },
        bp: if regs { w.bp } else { 0 },
        words_addr: if words.is_empty() { 0 } else { w.words_addr },
        words,
        origin,
    }
}

pub fn lock_kind(k: u32) -> crate::event::AcqKind {
    use crate::event::AcqKind::*;
    use observer_ebpf::bindings::obs_lock_kind as K;
    match k {
        x if x == K::OBS_LK_MUTEX as u32 => Mutex,
        x if x == K::OBS_LK_RWLOCK_READ as u32 => RwRead,
        x if x == K::OBS_LK_RWLOCK_WRITE as u32 => RwWrite,
        x if x == K::OBS_LK_SEM as u32 => Semaphore,
        x if x == K::OBS_LK_PYLOCK as u32 => PyLock,
        _ => Unknown,
    }
}

fn thread_new(h: &obs_hdr, r: &obs_task_new) -> Event {
    Event::ThreadNew {
        ts_ns: h.ts_ns,
        tgid: h.tgid,
        creator: h.tid,
        tid: r.child_tid,
        child_tgid: r.child_tgid,
        clone_flags: r.clone_flags,
        child_tid_addr: r.child_tid_addr,
        name: cstr(&r.child_comm),
        pthread: r.pthread,
        create_site: r.create_site,
        detached: r.detached != 0,
    }
}

/// Where thread `t` was created: a copy of its creator's stack to unwind,
/// or (`sig`) the signature it matched.
fn creation_stack(
    h: &obs_hdr,
    t: &obs_task_new,
    regs: [u64; 3],
    stack: Vec<u8>,
    sig: u32,
) -> Event {
    Event::CreationStack {
        ts_ns: h.ts_ns,
        tgid: t.child_tgid,
        tid: t.child_tid,
        regs,
        stack,
        frames: Vec::new(),
        sig,
    }
}

/// Decodes one ring buffer record into its events (a thread created with
/// its creator's stack gives two).
pub fn decode_into(b: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
    let h: obs_hdr = read(b, 0)?;
    if h.kind == obs_rec_kind::OBS_REC_TASK_NEW_STACK as u32 {
        let r: obs_task_new_stack = read(b, h.kind)?;
        let len = (r.stack_len as usize).min(r.stack.len());
        out.push(thread_new(&h, &r.t));
        out.push(creation_stack(
            &h,
            &r.t,
            [r.ip, r.sp, r.bp],
            r.stack[..len].to_vec(),
            0,
        ));
        return Ok(());
    }
    if h.kind == obs_rec_kind::OBS_REC_TASK_NEW as u32 {
        let r: obs_task_new = read(b, h.kind)?;
        out.push(thread_new(&h, &r));
        if r.stack_sig != 0 {
            // its stack matched a signature: the frames are known already
            out.push(creation_stack(&h, &r, [0; 3], Vec::new(), r.stack_sig));
        }
        return Ok(());
    }
    out.push(decode_record(b)?);
    Ok(())
}

/// Decodes one ring buffer record into an event.
pub fn decode_record(b: &[u8]) -> Result<Event, DecodeError> {
    let h: obs_hdr = read(b, 0)?;
    let (tgid, tid, ts_ns) = (h.tgid, h.tid, h.ts_ns);
    let k = h.kind;
    let ev = match k {
        x if x == obs_rec_kind::OBS_REC_TASK_NEW as u32 => {
            let r: obs_task_new = read(b, k)?;
            thread_new(&h, &r)
        }
        x if x == obs_rec_kind::OBS_REC_JOIN_WAIT as u32 => {
            let r: obs_join_wait = read(b, k)?;
            Event::JoinWait {
                ts_ns,
                tgid,
                tid,
                uaddr: r.uaddr,
                val: r.val,
            }
        }
        x if x == obs_rec_kind::OBS_REC_JOIN_STATE as u32 => {
            let r: obs_join_state = read(b, k)?;
            let ok = r.flags & OBS_JS_READ != 0;
            Event::JoinState {
                ts_ns,
                tgid,
                tid,
                pthread: r.pthread,
                read: ok,
                tid_word: if ok { r.tid_word } else { 0 },
                joinid: if ok { r.joinid } else { 0 },
            }
        }
        x if x == obs_rec_kind::OBS_REC_TASK_EXIT as u32 => {
            let r: obs_task_exit = read(b, k)?;
            Event::ThreadExit {
                ts_ns,
                tgid,
                tid,
                exit_code: r.exit_code,
                group_dead: r.group_dead != 0,
                group_exit: r.group_exit != 0,
            }
        }
        x if x == obs_rec_kind::OBS_REC_TASK_RENAME as u32 => {
            let r: obs_task_rename = read(b, k)?;
            Event::ThreadRename {
                ts_ns,
                tgid,
                tid,
                name: cstr(&r.newcomm),
            }
        }
        x if x == obs_rec_kind::OBS_REC_EXEC as u32 => {
            let r: obs_exec = read(b, k)?;
            Event::Exec {
                ts_ns,
                tgid,
                tid,
                old_tid: r.old_tid,
                filename: cstr(&r.filename),
                name: cstr(&r.comm),
                image: (r.start_code != 0).then_some(ExeImage {
                    // the kernel's dev_t: 12-bit major, 20-bit minor
                    dev: (r.exe_dev >> 20, r.exe_dev & 0xfffff),
                    inode: r.exe_ino,
                    start_code: r.start_code,
                    end_code: r.end_code,
                }),
            }
        }
        x if x == obs_rec_kind::OBS_REC_LOOP_GAP as u32 => {
            let r: obs_loop_gap = read(b, k)?;
            Event::LoopBlocked {
                ts_ns,
                tgid,
                tid,
                start_ns: r.start_ns,
                end_ns: Some(r.end_ns),
                runq_ns: r.runq_ns,
                python: Vec::new(),
                task: None,
            }
        }
        x if x == obs_rec_kind::OBS_REC_WAIT_DONE as u32 => {
            let r: obs_wait_done = read(b, k)?;
            Event::WaitDone {
                ts_ns: r.end_ns,
                tgid,
                tid,
                wait: wait_from_raw(&r.wait, WaitOrigin::Kernel),
                ret: r.ret,
            }
        }
        x if x == obs_rec_kind::OBS_REC_PTHREAD as u32 => {
            let r: obs_pthread = read(b, k)?;
            let op = match r.op {
                x if x == obs_pthread_op::OBS_PT_JOIN as u32 => PthreadOp::Join,
                x if x == obs_pthread_op::OBS_PT_DETACH as u32 => PthreadOp::Detach,
                x if x == obs_pthread_op::OBS_PT_EXIT as u32 => PthreadOp::Exit,
                other => return Err(DecodeError::UnknownKind(0x100 | other)),
            };
            Event::Pthread {
                ts_ns,
                tgid,
                tid,
                op,
                pthread: r.pthread,
                site: r.site,
            }
        }
        x if x == obs_rec_kind::OBS_REC_LOCK_EDGE as u32 => {
            let r: obs_lock_edge = read(b, k)?;
            let len = (r.stack_len as usize).min(r.stack.len());
            Event::LockEdge {
                ts_ns,
                tgid,
                tid,
                edge: crate::event::EdgeId {
                    from: r.key.from,
                    from_gen: r.key.from_gen,
                    to: r.key.to,
                    to_gen: r.key.to_gen,
                },
                from_kind: lock_kind(r.from_kind),
                to_kind: lock_kind(r.to_kind),
                from_site: r.from_site,
                to_site: r.to_site,
                gate: r.gate,
                regs: [r.ip, r.sp, r.bp],
                stack: r.stack[..len].to_vec(),
                frames: Vec::new(),
            }
        }
        x if x == obs_rec_kind::OBS_REC_EXIT_HELD as u32 => {
            let r: obs_exit_held = read(b, k)?;
            let n = (r.n as usize).min(r.locks.len());
            Event::ExitHeld {
                ts_ns,
                tgid,
                tid,
                locks: r.locks[..n]
                    .iter()
                    .map(|l| crate::event::HeldLock {
                        lock: l.lock,
                        kind: lock_kind(l.kind as u32),
                        acquired_ns: l.acquired_ns,
                        site: l.site,
                    })
                    .collect(),
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(ev)
}

/// Per-lock statistics and per-holder totals with what threads' hold
/// caches (HELD: tid -> obs_held) have not yet added to them.
#[allow(clippy::type_complexity)]
pub fn add_hold_caches(
    mut stats: Vec<(obs_lock_key, obs_lock_stats)>,
    mut holders: Vec<(obs_holder_key, obs_holder)>,
    held: &[(u32, obs_held)],
) -> (
    Vec<(obs_lock_key, obs_lock_stats)>,
    Vec<(obs_holder_key, obs_holder)>,
) {
    for (tid, h) in held {
        for c in h.cache.iter().filter(|c| c.count != 0) {
            add_hold_cache(&mut stats, &mut holders, *tid, h.tgid, c);
        }
    }
    (stats, holders)
}

/// One slot of one thread's hold cache into the totals.
fn add_hold_cache(
    stats: &mut Vec<(obs_lock_key, obs_lock_stats)>,
    holders: &mut Vec<(obs_holder_key, obs_holder)>,
    tid: u32,
    tgid: u32,
    c: &obs_hold_cache,
) {
    {
        let key = obs_lock_key {
            lock: c.lock,
            tgid,
            gen_: c.gen_,
        };
        let i = match stats
            .iter()
            .position(|(k, _)| (k.lock, k.tgid, k.gen_) == (key.lock, key.tgid, key.gen_))
        {
            Some(i) => i,
            None => {
                let z = obs_lock_stats {
                    kind: c.kind,
                    ..Default::default()
                };
                stats.push((key, z));
                stats.len() - 1
            }
        };
        let st = &mut stats[i].1;
        st.acquired += c.count;
        st.hold_total_ns += c.hold_total_ns;
        st.hold_max_ns = st.hold_max_ns.max(c.hold_max_ns);
        for (a, b) in st.hold_hist.iter_mut().zip(c.hold_hist.iter()) {
            *a += b;
        }
        let hk = obs_holder_key {
            lock: c.lock,
            tgid,
            tid,
        };
        match holders
            .iter_mut()
            .find(|(k, _)| (k.lock, k.tgid, k.tid) == (hk.lock, hk.tgid, hk.tid))
        {
            Some((_, v)) => {
                v.count += c.count;
                v.hold_total_ns += c.hold_total_ns;
            }
            None => holders.push((
                hk,
                obs_holder {
                    count: c.count,
                    hold_total_ns: c.hold_total_ns,
                },
            )),
        }
    }
}

/// Every entry of a BPF hash map, in a few `BPF_MAP_LOOKUP_BATCH` calls
/// (Linux 5.6+) instead of two syscalls per entry. None where the kernel
/// refuses it: the caller walks the map key by key.
pub(super) fn hash_entries<K: aya::Pod, V: aya::Pod>(
    fd: std::os::fd::BorrowedFd<'_>,
) -> Option<Vec<(K, V)>> {
    use std::os::fd::AsRawFd;
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut out = Vec::new();
    let mut chunk = 256usize;
    // A hash map's batch token is its bucket index (u32); room for more.
    let (mut token_in, mut token_out) = ([0u8; 8], [0u8; 8]);
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * ks];
        let mut vals = vec![0u8; chunk * vs];
        let mut a = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the attr points at buffers of `count` keys and values of
        // the map's sizes and at 8-byte tokens, all alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut a as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {}
            // A bucket holds more entries than the chunk: a bigger one.
            Some(libc::ENOSPC) if chunk < 1 << 16 => {
                chunk *= 4;
                continue;
            }
            Some(_) => return None,
        }
        for i in 0..(a.count as usize).min(chunk) {
            // SAFETY: K and V are Pod (any bit pattern is valid); each
            // slice is exactly one value's bytes, read unaligned.
            let k = unsafe { std::ptr::read_unaligned(keys[i * ks..].as_ptr().cast::<K>()) };
            let v = unsafe { std::ptr::read_unaligned(vals[i * vs..].as_ptr().cast::<V>()) };
            out.push((k, v));
        }
        if err.is_some() {
            return Some(out);
        }
        token_in = token_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain C struct as bytes.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn hold_caches_add_to_lock_stats_and_holders() {
        let key = obs_lock_key {
            lock: 0x1000,
            tgid: 7,
            gen_: 0,
        };
        let mut st = obs_lock_stats {
            acquired: 2,
            hold_total_ns: 200,
            hold_max_ns: 150,
            kind: 1,
            ..Default::default()
        };
        st.hold_hist[0] = 2;
        let mut h = obs_held {
            tgid: 7,
            ..Default::default()
        };
        h.cache[1].lock = 0x1000;
        h.cache[1].kind = 1;
        h.cache[1].count = 3;
        h.cache[1].hold_total_ns = 900;
        h.cache[1].hold_max_ns = 500;
        h.cache[1].hold_hist[0] = 3;
        // a second thread's cache on a lock LSTATS does not have yet
        let mut other = h;
        other.cache[1].lock = 0x2000;
        other.cache[1].count = 1;
        // an empty cache adds nothing
        let empty = obs_held {
            tgid: 7,
            ..Default::default()
        };
        let (stats, holders) = add_hold_caches(
            vec![(key, st)],
            Vec::new(),
            &[(8, h), (9, other), (10, empty)],
        );
        assert_eq!(stats.len(), 2);
        let a = &stats[0].1;
        assert_eq!(
            (a.acquired, a.hold_total_ns, a.hold_max_ns, a.hold_hist[0]),
            (5, 1100, 500, 5)
        );
        assert_eq!(
            (stats[1].0.lock, stats[1].1.acquired, stats[1].1.kind),
            (0x2000, 1, 1)
        );
        let by: Vec<(u64, u32, u64)> = holders
            .iter()
            .map(|(k, v)| (k.lock, k.tid, v.count))
            .collect();
        assert_eq!(by, vec![(0x1000, 8, 3), (0x2000, 9, 1)]);
    }

    #[test]
    fn decodes_task_new() {
        let mut r = obs_task_new::default();
        r.hdr.kind = obs_rec_kind::OBS_REC_TASK_NEW as u32;
        r.hdr.tgid = 10;
        r.hdr.tid = 11;
        r.hdr.ts_ns = 99;
        r.child_tid = 12;
        r.child_tgid = 10;
        r.child_tid_addr = 0x7f00;
        for (i, c) in b"w\x1b[1".iter().enumerate() {
            r.child_comm[i] = *c as c_char;
        }
        let ev = decode_record(&bytes_of(&r)).unwrap();
        assert_eq!(
            ev,
            Event::ThreadNew {
                ts_ns: 99,
                tgid: 10,
                creator: 11,
                tid: 12,
                child_tgid: 10,
                clone_flags: 0,
                child_tid_addr: 0x7f00,
                name: "w\x1b[1".into(),
                pthread: 0,
                create_site: 0,
                detached: false,
            }
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let mut h = obs_hdr {
            kind: obs_rec_kind::OBS_REC_WAIT_DONE as u32,
            ..Default::default()
        };
        assert!(matches!(
            decode_record(&bytes_of(&h)),
            Err(DecodeError::Short { .. })
        ));
        h.kind = 77;
        assert_eq!(
            decode_record(&bytes_of(&h)),
            Err(DecodeError::UnknownKind(77))
        );
        assert!(decode_record(&[1, 2]).is_err());
    }
}
