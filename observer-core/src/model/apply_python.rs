//! Python state: views, event loops, the GIL, thread names.

use super::*;

impl Model {
    /// The python events (`Model::apply` routes them here).
    pub(super) fn apply_python(&mut self, ev: &Event) {
        match ev {
            Event::PyState { ts_ns, tgid, view } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                for t in &view.threads {
                    if let Some(name) = &t.name
                        && p.thread(t.tid).is_some()
                    {
                        let th = p.ensure_thread(t.tid, *ts_ns);
                        if th.py_name.as_deref() != Some(name.as_str()) {
                            th.py_name = Some(name.clone());
                            th.names.push((*ts_ns, name.clone()));
                        }
                    }
                }
                for l in view.locks.iter().filter(|l| l.name.is_some()) {
                    let name = view.lock_name(l.addr);
                    p.py_lock_names.insert(l.addr, name.clone());
                    if l.word != 0 {
                        p.py_lock_names.insert(l.word, name);
                    }
                }
                p.python = Some(view.clone());
            }
            Event::LoopBlocked {
                ts_ns,
                tgid,
                tid,
                start_ns,
                end_ns,
                runq_ns,
                python,
                task,
            } => {
                let s = self
                    .proc_mut(*tgid, *ts_ns)
                    .loop_blocked(*ts_ns, *tid, *start_ns, *end_ns, *runq_ns);
                if s.python.is_empty() && !python.is_empty() {
                    s.python = python.clone();
                    s.task = task.clone();
                }
            }
            Event::LoopSeen { ts_ns, tgid, tid } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                p.loop_seen.get_or_insert((*tid, *ts_ns));
            }
            Event::PyGil { ts_ns, tgid, tally } => {
                self.proc_mut(*tgid, *ts_ns).gil = Some(tally.clone());
            }
            Event::PyThreadName {
                ts_ns,
                tgid,
                tid,
                name,
            } => {
                let t = self.proc_mut(*tgid, *ts_ns).ensure_thread(*tid, *ts_ns);
                if t.py_name.as_deref() != Some(name.as_str()) {
                    t.py_name = Some(name.clone());
                    t.names.push((*ts_ns, name.clone()));
                }
            }
            _ => {}
        }
    }
}
