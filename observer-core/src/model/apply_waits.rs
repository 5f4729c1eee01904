//! Waits and locks: futex waits, owners, edges, held locks, profiles, names.

use super::*;

/// EDEADLK on Linux (x86_64, aarch64): a PI futex wait that would deadlock.
const EDEADLK: i64 = 35;

impl Model {
    /// The waits events (`Model::apply` routes them here).
    pub(super) fn apply_wait(&mut self, ev: &Event) {
        match ev {
            Event::WaitBegin {
                ts_ns,
                tgid,
                tid,
                wait,
            } => {
                let t = self.proc_mut(*tgid, *ts_ns).ensure_thread(*tid, *ts_ns);
                t.wait = Some(wait.clone());
            }
            Event::WaitEnd {
                ts_ns,
                tgid,
                tid,
                start_ns,
                ret,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                let t = p.ensure_thread(*tid, *ts_ns);
                if t.wait.as_ref().is_some_and(|w| w.start_ns == *start_ns) {
                    let w = t.wait.take().expect("checked");
                    let mut h = std::mem::take(&mut p.history);
                    h.ended(p, *tid, &w, *ts_ns, *ret);
                    p.history = h;
                }
            }
            Event::WaitDone {
                ts_ns,
                tgid,
                tid,
                wait,
                ret,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                let t = p.ensure_thread(*tid, *ts_ns);
                // The copy seen in progress has the freshest words (holder).
                let seen = t
                    .wait
                    .take_if(|w| w.start_ns == wait.start_ns)
                    .unwrap_or_else(|| wait.clone());
                let mut h = std::mem::take(&mut p.history);
                h.ended(p, *tid, &seen, *ts_ns, Some(*ret));
                p.history = h;
                if *ret == -EDEADLK && crate::event::futex::is_pi(wait.op) {
                    p.pi_edeadlk.push((*tid, wait.clone(), *ts_ns));
                }
                p.long_waits.push(LongWait {
                    tid: *tid,
                    wait: wait.clone(),
                    end_ns: *ts_ns,
                    ret: *ret,
                });
            }
            Event::LockStats {
                tgid,
                uaddr,
                op,
                count,
                total_ns,
                max_ns,
            } => {
                let p = self.proc_mut(*tgid, 0);
                // pthread_join's wait is shared; a private wait on a word
                // that once was a thread's is a lock's (memory reused).
                let join = p.join_words.contains(uaddr) && !crate::event::futex::is_private(*op);
                let table = if join {
                    p.locks.remove(uaddr);
                    &mut p.joins
                } else {
                    p.joins.remove(uaddr);
                    &mut p.locks
                };
                table.insert(
                    *uaddr,
                    LockStat {
                        uaddr: *uaddr,
                        op: *op,
                        count: *count,
                        total_ns: *total_ns,
                        max_ns: *max_ns,
                    },
                );
            }
            Event::WaitWords {
                ts_ns,
                tgid,
                tid,
                start_ns,
                words_addr,
                words,
            } => {
                let t = self.proc_mut(*tgid, *ts_ns).ensure_thread(*tid, *ts_ns);
                if let Some(w) = t.wait.as_mut().filter(|w| w.start_ns == *start_ns) {
                    w.words_addr = *words_addr;
                    w.words = words.clone();
                }
            }
            Event::Symbol { tgid, addr, name } => {
                self.symbols.insert((*tgid, *addr), name.clone());
            }
            Event::LockEdge {
                ts_ns,
                tgid,
                tid,
                edge,
                from_kind,
                to_kind,
                from_site,
                to_site,
                gate,
                frames,
                ..
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                p.lock_edges.entry(*edge).or_insert(LockEdgeInfo {
                    first_ns: *ts_ns,
                    tid: *tid,
                    from_kind: *from_kind,
                    to_kind: *to_kind,
                    from_site: *from_site,
                    to_site: *to_site,
                    frames: frames.clone(),
                    gate: *gate,
                });
            }
            Event::EdgeGates { ts_ns, tgid, gates } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                for (e, g) in gates {
                    if let Some(x) = p.lock_edges.get_mut(e) {
                        x.gate = *g;
                    }
                }
            }
            Event::LockOwner {
                ts_ns,
                tgid,
                lock,
                owner,
                kind,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                p.history.owner(*lock, *owner, *kind, *ts_ns);
                match owner {
                    Some(t) => p.lock_owners.insert(*lock, (*t, *kind)),
                    None => p.lock_owners.remove(lock),
                };
            }
            Event::ExitHeld {
                ts_ns,
                tgid,
                tid,
                locks,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                for l in locks {
                    p.history.held_until_exit(l, *tid, *ts_ns);
                }
                p.exit_held.push((*tid, *ts_ns, locks.clone()));
            }
            Event::HeldAtAttach {
                ts_ns,
                tgid,
                lock,
                kind,
                holder,
                waiter,
                evidence,
            } => {
                let h = self
                    .proc_mut(*tgid, *ts_ns)
                    .held_at_attach
                    .entry(*lock)
                    .or_insert(HeldAtAttach {
                        first_ns: *ts_ns,
                        kind: *kind,
                        holder: None,
                        waiters: Vec::new(),
                        evidence: *evidence,
                    });
                h.holder = h.holder.or(*holder);
                if !h.waiters.contains(waiter) {
                    h.waiters.push(*waiter);
                }
            }
            Event::LockProfile {
                tgid,
                lock,
                generation,
                kind,
                profile,
            } => {
                self.proc_mut(*tgid, 0)
                    .lock_profiles
                    .insert((*lock, *generation), (*kind, profile.clone()));
            }
            Event::CodeSymbol { tgid, addr, name } => {
                self.code_symbols.insert((*tgid, *addr), name.clone());
            }
            _ => {}
        }
    }
}
