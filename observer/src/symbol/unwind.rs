//! Native stacks: registers, stack copies, unwinding and symbolization.
use super::*;

impl Symbolizer {
    /// See [`native_stack`].
    pub fn native_stack(&mut self, pid: u32, tid: u32, regs: Regs) -> anyhow::Result<Vec<Frame>> {
        self.native_stacks(pid, &[(tid, regs)])
            .pop()
            .expect("one result per thread")
            .1
    }

    /// Unwinds and symbolizes several threads of one process at once (one
    /// maps read, one symbolization batch per module). A thread whose
    /// `regs.sp` is 0 gets its registers from /proc/PID/task/TID/syscall.
    pub fn native_stacks(
        &mut self,
        pid: u32,
        threads: &[(u32, Regs)],
    ) -> Vec<(u32, anyhow::Result<Vec<Frame>>)> {
        // 1. Registers and stack copies.
        let mut copies = Vec::with_capacity(threads.len());
        for &(tid, regs) in threads {
            let regs = if regs.sp == 0 {
                match proc_syscall(pid, tid) {
                    Some((_, _, sp, pc)) => Regs { ip: pc, sp, bp: 0 },
                    None => {
                        copies.push((
                            tid,
                            Err(anyhow::anyhow!("thread {tid} of {pid} is running or gone")),
                            None,
                        ));
                        continue;
                    }
                }
            } else {
                regs
            };
            copies.push((tid, Ok(regs), None));
        }
        self.unwind_and_symbolize(pid, copies)
    }

    /// Native stack from a copy of the thread's stack taken earlier (by BPF,
    /// at a lock call): `regs` as they were then, `bytes` read from `regs.sp`.
    pub fn stack_from_copy(
        &mut self,
        pid: u32,
        regs: Regs,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Vec<Frame>> {
        let mut r = self.unwind_and_symbolize(pid, vec![(0, Ok(regs), Some(bytes))]);
        r.pop().map(|x| x.1).unwrap_or_else(|| Ok(Vec::new()))
    }

    /// A thread's creation stack, from its creator's registers at the clone
    /// and a copy of the top of its stack taken then (by BPF): return
    /// addresses from the creation site outwards (see
    /// [`native::creation_frames`]). Unwinding only, no symbols: it runs for
    /// every thread created; [`Symbolizer::call_site`] names the addresses.
    /// A process that has exited is unwound with the mappings last read.
    /// Also says which stack words and registers the result depends on.
    pub fn creation_stack(&mut self, pid: u32, regs: Regs, bytes: Vec<u8>) -> CreationUnwind {
        // Cached mappings that cover the clone are used as they are: a
        // churning process creates thousands of threads a second, and by the
        // time they are unwound it may be gone (or a zombie, with no maps).
        let known = self
            .procs
            .get(&pid)
            .is_some_and(|p| p.module_of_code(regs.ip).is_some());
        if !known {
            let alive = self
                .proc(pid, false)
                .is_ok_and(|p| p.module_of_code(regs.ip).is_some())
                || self
                    .proc(pid, true)
                    .is_ok_and(|p| p.module_of_code(regs.ip).is_some());
            if !alive {
                return Default::default();
            }
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return Default::default();
        };
        let stack = native::StackCopy {
            base: regs.sp,
            bytes,
        };
        p.creation
            .stack(&p.unwinder, &mut p.cache, &p.modules, regs, &stack)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn unwind_and_symbolize(
        &mut self,
        pid: u32,
        copies: Vec<(u32, anyhow::Result<Regs>, Option<Vec<u8>>)>,
    ) -> Vec<(u32, anyhow::Result<Vec<Frame>>)> {
        let mut fixups = std::mem::take(&mut self.ret_fixups);
        // 2. Unwind each thread; refresh the maps once if a stack or the ip
        //    is outside what we know (a new thread stack, a dlopen).
        let mut unwound: Vec<(u32, anyhow::Result<Vec<FrameAddress>>)> =
            Vec::with_capacity(copies.len());
        let mut refreshed = false;
        for (tid, regs, mut given) in copies {
            let regs = match regs {
                Ok(r) => r,
                Err(e) => {
                    unwound.push((tid, Err(e)));
                    continue;
                }
            };
            let r = (|| {
                let mut p = self.proc(pid, false)?;
                if !refreshed
                    && (p.mapping_of(regs.sp).is_none() || p.module_of_code(regs.ip).is_none())
                {
                    refreshed = true;
                    p = self.proc(pid, true)?;
                }
                let mut stack = match given.take() {
                    Some(bytes) => native::StackCopy {
                        base: regs.sp,
                        bytes,
                    },
                    None => {
                        let Some(stack_map) = p.mapping_of(regs.sp) else {
                            bail!(
                                "sp {:#x} of thread {tid} is in no mapping of {pid}",
                                regs.sp
                            )
                        };
                        let len = (stack_map.end - regs.sp).min(native::MAX_STACK_COPY) as usize;
                        native::StackCopy {
                            base: regs.sp,
                            bytes: native::read_mem(pid, regs.sp, len),
                        }
                    }
                };
                // Put back return addresses hidden by uretprobe trampolines.
                if let (Some(sites), Some(tramp)) = (
                    fixups.remove(&tid),
                    p.maps.iter().find(|e| e.path == "[uprobes]"),
                ) {
                    let mut sites = sites.into_iter();
                    for w in stack.bytes.chunks_exact_mut(8) {
                        let v = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
                        if (tramp.start..tramp.end).contains(&v) {
                            match sites.next() {
                                Some(real) => w.copy_from_slice(&real.to_ne_bytes()),
                                None => break,
                            }
                        }
                    }
                }
                Ok(native::unwind(&p.unwinder, &mut p.cache, regs, &stack))
            })();
            unwound.push((tid, r));
        }
        // 3. Symbolize, batched per module.
        let Some(p) = self.procs.get(&pid) else {
            return unwound
                .into_iter()
                .map(|(t, r)| (t, r.map(|_| Vec::new())))
                .collect();
        };
        let mut wanted: HashMap<usize, Vec<u64>> = HashMap::new();
        for (_, r) in &unwound {
            for f in r.iter().flatten() {
                if let Some(i) = p
                    .modules
                    .iter()
                    .position(|m| m.code.contains(&f.address_for_lookup()))
                {
                    wanted
                        .entry(i)
                        .or_default()
                        .push(p.modules[i].svma(f.address_for_lookup()));
                }
            }
        }
        // (module, svma) → frames for that lookup address.
        let mut symbolized: HashMap<(usize, u64), Vec<Frame>> = HashMap::new();
        for (i, mut svmas) in wanted {
            svmas.sort_unstable();
            svmas.dedup();
            let m = &p.modules[i];
            let blaze = self.shared.blaze_for(m);
            let syms: Vec<Option<bz::Sym<'_>>> = match &m.open_path {
                Some(path) => {
                    let src = Source::Elf(bz::source::Elf::new(path.clone()));
                    match blaze.symbolize(&src, Input::VirtOffset(&svmas)) {
                        Ok(v) => v.into_iter().map(|s| s.into_sym()).collect(),
                        Err(e) => {
                            tracing::debug!("symbolizing in {}: {e}", m.name);
                            vec![None; svmas.len()]
                        }
                    }
                }
                None => vec![None; svmas.len()],
            };
            for (svma, sym) in svmas.iter().zip(syms) {
                let avma = svma.wrapping_add(m.bias);
                let mut frames = Vec::new();
                match sym {
                    Some(s) => native::frames_from_sym(avma, m, &s, &mut frames),
                    None => {
                        let function = m.elf.func_at(*svma).map(|(n, _)| demangle(n).into_owned());
                        frames.push(Frame {
                            addr: avma,
                            function,
                            file: None,
                            line: None,
                            module: Some(m.name.clone()),
                            module_offset: *svma,
                            inlined: false,
                        });
                    }
                }
                symbolized.insert((i, *svma), frames);
            }
        }
        unwound
            .into_iter()
            .map(|(tid, r)| {
                let r = r.map(|addrs| {
                    let mut out = Vec::with_capacity(addrs.len());
                    for f in addrs {
                        let (addr, lookup) = (f.address(), f.address_for_lookup());
                        let module = p.modules.iter().position(|m| m.code.contains(&lookup));
                        match module.and_then(|i| {
                            symbolized
                                .get(&(i, p.modules[i].svma(lookup)))
                                .map(|fr| (i, fr))
                        }) {
                            Some((i, frames)) => out.extend(frames.iter().map(|fr| Frame {
                                addr,
                                module_offset: p.modules[i].svma(addr),
                                ..fr.clone()
                            })),
                            None => out.push(Frame {
                                addr,
                                function: None,
                                file: None,
                                line: None,
                                module: None,
                                module_offset: addr,
                                inlined: false,
                            }),
                        }
                    }
                    out
                });
                (tid, r)
            })
            .collect()
    }

    /// Where a call was made, from its return address (e.g. the
    /// `pthread_create` call that made a thread): the innermost frame at
    /// the call, with file:line when debug info exists.
    pub fn call_site(&mut self, pid: u32, ret_addr: u64) -> Option<Frame> {
        let lookup = ret_addr.checked_sub(1)?;
        for force in [false, true] {
            let alive = start_time(pid).is_some();
            let m = if alive {
                let p = self.proc(pid, force).ok()?;
                p.modules.iter().find(|m| m.code.contains(&lookup)).cloned()
            } else {
                // gone: the mappings read while it lived
                let p = self.procs.get(&pid)?;
                p.modules.iter().find(|m| m.code.contains(&lookup)).cloned()
            };
            let Some(m) = m else {
                continue;
            };
            let svma = m.svma(lookup);
            let blaze = self.shared.blaze_for(&m);
            let sym = m.open_path.as_ref().and_then(|path| {
                let src = Source::Elf(bz::source::Elf::new(path.clone()));
                blaze
                    .symbolize_single(&src, Input::VirtOffset(svma))
                    .ok()?
                    .into_sym()
            });
            let mut frames = Vec::new();
            match sym {
                Some(s) => native::frames_from_sym(lookup, &m, &s, &mut frames),
                None => frames.push(Frame {
                    addr: lookup,
                    function: m.elf.func_at(svma).map(|(n, _)| demangle(n).into_owned()),
                    file: None,
                    line: None,
                    module: Some(m.name.clone()),
                    module_offset: svma,
                    inlined: false,
                }),
            }
            return frames.into_iter().next().map(|f| Frame {
                addr: ret_addr,
                ..f
            });
        }
        None
    }

    /// The stacks of every thread of `pid` that is blocked in a syscall (or
    /// stopped), from /proc registers. Running threads are skipped.
    #[allow(dead_code)]
    pub fn blocked_stacks(
        &mut self,
        pid: u32,
    ) -> anyhow::Result<Vec<(u32, anyhow::Result<Vec<Frame>>)>> {
        let mut threads = Vec::new();
        let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("listing threads of {pid}"))?;
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, _, sp, pc)) = proc_syscall(pid, tid) {
                threads.push((tid, Regs { ip: pc, sp, bp: 0 }));
            }
        }
        threads.sort_by_key(|t| t.0);
        Ok(self.native_stacks(pid, &threads))
    }
}
