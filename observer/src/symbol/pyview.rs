//! The Symbolizer's way into a CPython process: py-spy's handle and the
//! Python view, cached per process.
use super::*;

impl Symbolizer {
    /// The cached py-spy handle of a CPython process (None: not Python).
    pub(super) fn spy(&mut self, pid: u32) -> anyhow::Result<Option<&mut py_spy::PythonSpy>> {
        let st = start_time(pid).with_context(|| format!("process {pid} is gone"))?;
        if self.pythons.get(&pid).is_none_or(|(s, _)| *s != st) {
            self.pythons.remove(&pid);
            let p = self.proc(pid, false)?;
            if !python::looks_like_python(&p.maps) {
                return Ok(None);
            }
            let spy = python::new_spy(pid)?;
            self.pythons.insert(pid, (st, spy));
        }
        Ok(self.pythons.get_mut(&pid).map(|(_, s)| s))
    }

    /// The Python view of a CPython process (threads, stacks, lock waits,
    /// holders, names; see `crate::python`). `waits`: TID -> futex address
    /// of the threads blocked in a futex wait. Ok(None): not Python.
    pub fn python_view(
        &mut self,
        pid: u32,
        waits: &HashMap<u32, u64>,
    ) -> anyhow::Result<Option<crate::python::PyView>> {
        let free = self
            .proc(pid, false)
            .map(|p| python::free_threaded(&p.maps))
            .unwrap_or(false);
        // Found from its symbols (cached per process): py-spy's own lookup
        // walks every thread's stack once more to validate it.
        let st = start_time(pid).with_context(|| format!("process {pid} is gone"))?;
        if self.located.get(&pid).is_none_or(|(s, _)| *s != st) {
            self.located.remove(&pid);
            let maps = self.proc(pid, false)?.maps.clone();
            if python::looks_like_python(&maps) {
                let found = {
                    let files = self.shared.0.borrow();
                    crate::python::locate_known(pid, &maps, &files.python)
                };
                match found {
                    Ok((l, learned)) => {
                        if let Some((id, facts)) = learned {
                            self.shared.0.borrow_mut().python.insert(id, facts);
                        }
                        self.located.insert(pid, (st, l));
                    }
                    Err(e) => tracing::debug!("python lookup of {pid}: {e:#}; asking py-spy"),
                }
            }
        }
        if let Some((_, loc)) = self.located.get(&pid) {
            let v = crate::python::view(pid, loc, free, waits);
            if !v.threads.is_empty() || v.unsupported.is_some() {
                return Ok(Some(v));
            }
            self.located.remove(&pid);
        }
        let Some(spy) = self.spy(pid)? else {
            return Ok(None);
        };
        let loc = crate::python::Located::of_spy(spy);
        Ok(Some(crate::python::view(pid, &loc, free, waits)))
    }

    /// The interpreter of a CPython process (for GIL accounting).
    /// Ok(None): not Python.
    pub fn python_interp(
        &mut self,
        pid: u32,
    ) -> anyhow::Result<Option<crate::python::gil::PyInterp>> {
        let free = self
            .proc(pid, false)
            .map(|p| python::free_threaded(&p.maps))
            .unwrap_or(false);
        let Some(spy) = self.spy(pid)? else {
            return Ok(None);
        };
        let v = &spy.version;
        Ok(Some(crate::python::gil::PyInterp {
            major: v.major,
            minor: v.minor,
            version: v.to_string(),
            interp: spy.addresses.interpreter_address as u64,
            free_threaded: free,
        }))
    }

    /// See [`python_threads`].
    pub fn python_threads(&mut self, pid: u32) -> anyhow::Result<Option<Vec<PyThread>>> {
        let Some(spy) = self.spy(pid)? else {
            return Ok(None);
        };
        match python::threads(spy) {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                // The layout may be stale (exec, interpreter re-init): start over next time.
                self.pythons.remove(&pid);
                Err(e)
            }
        }
    }
}
