//! Threads: seen, created, joined, renamed, ended, stuck; their stacks.

use super::*;

impl Model {
    /// The threads events (`Model::apply` routes them here).
    pub(super) fn apply_thread(&mut self, ev: &Event) {
        match ev {
            Event::ThreadSeen {
                ts_ns,
                tgid,
                tid,
                name,
                parent_tid,
                start_ns,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                let t = p.add_thread(Thread {
                    tid: *tid,
                    tgid: *tgid,
                    names: vec![(*ts_ns, name.clone())],
                    parent_tid: *parent_tid,
                    clone_flags: None,
                    child_tid_addr: 0,
                    start_ns: *start_ns,
                    exit_ns: None,
                    exit_code: None,
                    preexisting: true,
                    wait: None,
                    ..Default::default()
                });
                if t.name().is_empty() {
                    t.names.push((*ts_ns, name.clone()));
                }
            }
            Event::ThreadNew {
                ts_ns,
                tgid,
                creator,
                tid,
                child_tgid,
                clone_flags,
                child_tid_addr,
                name,
                pthread,
                create_site,
                detached,
            } => {
                let p = self.proc_mut(*child_tgid, *ts_ns);
                if child_tgid != tgid && p.cmdline.is_empty() {
                    // A followed fork runs its parent's program (until it
                    // execs): its first thread's parent is the creator.
                    if let Some(parent) = self.process(*tgid) {
                        let (cmd, exe) = (parent.cmdline.clone(), parent.exe.clone());
                        let child = self.proc_mut(*child_tgid, *ts_ns);
                        child.cmdline = cmd;
                        child.exe = child.exe.take().or(exe);
                    }
                }
                let p = self.proc_mut(*child_tgid, *ts_ns);
                // A descriptor in use again was freed: its last owner was
                // joined or detached.
                if *pthread != 0
                    && let Some(&i) = p.by_pthread.get(pthread)
                {
                    p.threads[i].released = true;
                }
                let t = p.add_thread(Thread {
                    tid: *tid,
                    tgid: *child_tgid,
                    names: vec![(*ts_ns, name.clone())],
                    parent_tid: Some(*creator),
                    clone_flags: Some(*clone_flags),
                    child_tid_addr: *child_tid_addr,
                    start_ns: Some(*ts_ns),
                    pthread: *pthread,
                    create_site: *create_site,
                    detached: *detached,
                    ..Default::default()
                });
                let tid = t.tid;
                if *pthread != 0
                    && let Some(&i) = p.live.get(&tid)
                {
                    p.by_pthread.insert(*pthread, i);
                }
            }
            Event::CreationStack {
                ts_ns,
                tgid,
                tid,
                frames,
                ..
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                if let Some(&site) = frames.first() {
                    let n = p.create_stacks.len();
                    let id = *p.stack_ids.entry(frames.clone()).or_insert(n);
                    if id == n {
                        p.create_stacks.push(frames.clone());
                    }
                    let t = p.ensure_thread(*tid, *ts_ns);
                    t.create_stack = Some(id);
                    if t.create_site == 0 {
                        let i = p.live[tid];
                        p.set_create_site(i, site);
                    }
                }
            }
            Event::JoinWait {
                ts_ns,
                tgid,
                tid,
                uaddr,
                val,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                if let Some(t) = p.thread_mut(*val)
                    && (t.child_tid_addr == *uaddr || t.child_tid_addr == 0)
                    && *val != *tid
                {
                    t.joined = true;
                    t.joined_by = Some(*tid);
                    // a thread seen only in /proc: its join word is known now
                    p.join_words.insert(*uaddr);
                }
            }
            Event::JoinState {
                ts_ns,
                tgid,
                tid,
                pthread,
                read,
                tid_word,
                joinid,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                let joiner = p
                    .by_pthread
                    .get(joinid)
                    .map(|&i| p.threads[i].tid)
                    .filter(|_| *joinid != 0);
                if let Some(t) = p.thread_mut(*tid).filter(|t| t.pthread == *pthread) {
                    if !*read || *tid_word > 0 {
                        // unmapped, or the descriptor belongs to a newer thread
                        t.released = true;
                    } else if *joinid == *pthread {
                        t.detached = true;
                    } else if *joinid != 0 || *tid_word == -1 {
                        t.joined = true;
                        t.joined_by = t.joined_by.or(joiner);
                    } else if *tid_word == 0 {
                        t.unjoined_at_exit = true;
                    }
                }
            }
            Event::ThreadExit {
                ts_ns,
                tgid,
                tid,
                exit_code,
                group_dead,
                group_exit,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                let t = p.end_thread(*tid, *ts_ns);
                t.exit_code = Some(*exit_code);
                t.ended_by_group_exit = *group_exit;
                if let Some(w) = t.wait.take() {
                    let mut h = std::mem::take(&mut p.history);
                    h.ended(p, *tid, &w, *ts_ns, None);
                    p.history = h;
                }
                let t = p.ensure_thread(*tid, *ts_ns);
                t.stuck = None;
                if *group_dead {
                    p.observed_to_ns = Some(*ts_ns);
                    if p.exit_status.is_none() {
                        p.exit_status = Some(*exit_code);
                    }
                }
            }
            Event::ThreadRename {
                ts_ns,
                tgid,
                tid,
                name,
            } => {
                let t = self.proc_mut(*tgid, *ts_ns).ensure_thread(*tid, *ts_ns);
                t.rename(*ts_ns, name);
            }
            Event::Pthread {
                ts_ns,
                tgid,
                tid,
                op,
                pthread,
                ..
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                match op {
                    PthreadOp::Exit => p.ensure_thread(*tid, *ts_ns).called_pthread_exit = true,
                    PthreadOp::Join | PthreadOp::Detach => {
                        // The newest thread with that pthread_t (they are reused).
                        if let Some(t) = p
                            .threads
                            .iter_mut()
                            .rev()
                            .find(|t| t.pthread == *pthread && *pthread != 0)
                        {
                            if *op == PthreadOp::Join {
                                t.joined = true;
                                t.joined_by = Some(*tid);
                            } else {
                                t.detached = true;
                            }
                        }
                    }
                }
            }
            Event::ThreadStuck {
                ts_ns,
                tgid,
                tid,
                since_ns,
                syscall,
                wchan,
            } => {
                let t = self.proc_mut(*tgid, *ts_ns).ensure_thread(*tid, *ts_ns);
                t.stuck = Some(Stuck {
                    since_ns: *since_ns,
                    syscall: *syscall,
                    wchan: wchan.clone(),
                });
            }
            Event::NoProgress {
                ts_ns,
                tgid,
                since_ns,
                blocked,
            } => {
                self.proc_mut(*tgid, *ts_ns).no_progress = Some(NoProgress {
                    since_ns: *since_ns,
                    at_ns: *ts_ns,
                    blocked: blocked.clone(),
                });
            }
            Event::ThreadResumed { ts_ns, tgid, tid } => {
                self.proc_mut(*tgid, *ts_ns)
                    .ensure_thread(*tid, *ts_ns)
                    .stuck = None;
            }
            Event::Stack {
                ts_ns,
                tgid,
                tid,
                frames,
                python,
                python_entry,
                owns_gil,
            } => {
                let t = self.proc_mut(*tgid, *ts_ns).ensure_thread(*tid, *ts_ns);
                t.stack = Some(StackSnap {
                    ts_ns: *ts_ns,
                    frames: frames.clone(),
                    python: python.clone(),
                    python_entry: python_entry.clone(),
                    owns_gil: *owns_gil,
                });
            }
            _ => {}
        }
    }
}
