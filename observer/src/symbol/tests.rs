//! Scenario tests: real C and Python programs that deadlock ABBA, observed
//! from outside with /proc and `process_vm_readv` only. Every program has a
//! hard timeout (alarm) and is killed when its guard drops.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::*;

const FUTEX: i64 = 202;

/// A running test program; killed (and reaped) on drop.
struct Target {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Target {
    fn spawn(cmd: &mut Command) -> Target {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn test program");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Target { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the test program printed nothing in 20 s")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tids(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until at least `n` threads of `pid` sleep in futex (wchan and
/// /proc syscall agree) and returns them.
fn wait_blocked(pid: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let blocked: Vec<u32> = tids(pid)
            .into_iter()
            .filter(|t| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{t}/wchan"))
                    .is_ok_and(|w| w.contains("futex"))
                    && proc_syscall(pid, *t).is_some_and(|s| s.0 == FUTEX)
            })
            .collect();
        if blocked.len() >= n {
            return blocked;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} threads of {pid} blocked in futex after 20 s",
            blocked.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn line_of(src: &str, marker: &str) -> u32 {
    src.lines()
        .position(|l| l.contains(marker))
        .expect("marker in source") as u32
        + 1
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compile(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    run(Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(&exe)
        .arg(&c));
    exe
}

fn show(frames: &[Frame]) -> String {
    frames
        .iter()
        .map(|f| {
            format!(
                "  {:#x} {}{} {}:{} [{}+{:#x}]\n",
                f.addr,
                f.function.as_deref().unwrap_or("??"),
                if f.inlined { " (inlined)" } else { "" },
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0),
                f.module.as_deref().unwrap_or("?"),
                f.module_offset
            )
        })
        .collect()
}

fn has_fn(frames: &[Frame], name: &str) -> bool {
    frames.iter().any(|f| f.function.as_deref() == Some(name))
}

const ABBA_C: &str = r#"#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

pthread_mutex_t lock_left = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_right = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold_one;
volatile int sink;

static inline __attribute__((always_inline)) void acquire_inl(pthread_mutex_t *m) {
    pthread_mutex_lock(m); /* BLOCK_INLINED */
    sink++;
}

__attribute__((noinline, noclone)) void take_left_then_right_zq(void) {
    pthread_mutex_lock(&lock_left);
    pthread_barrier_wait(&both_hold_one);
    pthread_mutex_lock(&lock_right); /* BLOCK_LEFT */
    sink++;
    pthread_mutex_unlock(&lock_right);
    pthread_mutex_unlock(&lock_left);
}

__attribute__((noinline, noclone)) void take_right_then_left_zq(void) {
    pthread_mutex_lock(&lock_right);
    pthread_barrier_wait(&both_hold_one);
    acquire_inl(&lock_left); /* BLOCK_RIGHT */
    sink++;
    pthread_mutex_unlock(&lock_left);
    pthread_mutex_unlock(&lock_right);
}

static void *left_main(void *arg) { take_left_then_right_zq(); sink++; return arg; }
static void *right_main(void *arg) { take_right_then_left_zq(); sink++; return arg; }

int main(void) {
    alarm(120);
    pthread_barrier_init(&both_hold_one, NULL, 2);
    printf("%p %p\n", (void *)&lock_left, (void *)&lock_right);
    fflush(stdout);
    pthread_t a, b;
    pthread_create(&a, NULL, left_main, NULL);
    pthread_create(&b, NULL, right_main, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
"#;

/// Starts an ABBA program and waits until its three threads block.
fn start_abba(exe: &Path) -> (Target, u64, u64, Vec<u32>) {
    let t = Target::spawn(&mut Command::new(exe));
    let line = t.line();
    let mut it = line
        .split_whitespace()
        .map(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap());
    let (left, right) = (it.next().unwrap(), it.next().unwrap());
    let blocked = wait_blocked(t.pid(), 3);
    (t, left, right, blocked)
}

fn stacks_from_proc(s: &mut Symbolizer, pid: u32, tids: &[u32]) -> Vec<(u32, Vec<Frame>)> {
    let regs: Vec<(u32, Regs)> = tids
        .iter()
        .map(|&t| {
            let (_, _, sp, pc) = proc_syscall(pid, t).expect("blocked thread has /proc syscall");
            (t, Regs { ip: pc, sp, bp: 0 })
        })
        .collect();
    s.native_stacks(pid, &regs)
        .into_iter()
        .map(|(t, r)| (t, r.expect("stack")))
        .collect()
}

#[test]
fn c_abba_globals_and_stacks() {
    if !have("gcc") {
        crate::testenv::missing("gcc is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "abba", ABBA_C);
    let (t, left, right, blocked) = start_abba(&exe);
    let pid = t.pid();

    // Globals.
    let sym = data_symbol(pid, left).expect("lock_left symbolized");
    assert_eq!((sym.name.as_str(), sym.offset), ("lock_left", 0));
    assert!(sym.module.ends_with("/abba"), "{sym:?}");
    let sym = data_symbol(pid, right + 8).expect("lock_right+8 symbolized");
    assert_eq!((sym.name.as_str(), sym.offset), ("lock_right", 8));
    // The heap and the stack hold no globals.
    let (_, _, sp, _) = proc_syscall(pid, blocked[0]).unwrap();
    assert_eq!(data_symbol(pid, sp), None);
    assert_eq!(data_symbol(pid, 0), None);

    // Stacks, through the free function (one thread at a time).
    let (l_line, r_line, inl_line) = (
        line_of(ABBA_C, "BLOCK_LEFT"),
        line_of(ABBA_C, "BLOCK_RIGHT"),
        line_of(ABBA_C, "BLOCK_INLINED"),
    );
    let mut seen = (false, false, false);
    for &tid in &blocked {
        let (_, _, sp, pc) = proc_syscall(pid, tid).unwrap();
        let frames = native_stack(pid, tid, Regs { ip: pc, sp, bp: 0 }).expect("stack");
        let dump = show(&frames);
        eprintln!("thread {tid}:\n{dump}");
        assert!(frames.len() >= 3, "too short:\n{dump}");
        assert!(
            frames[0]
                .module
                .as_deref()
                .is_some_and(|m| m.contains("libc")),
            "innermost frame in libc:\n{dump}"
        );
        if has_fn(&frames, "take_left_then_right_zq") {
            seen.0 = true;
            let f = frames
                .iter()
                .find(|f| f.function.as_deref() == Some("take_left_then_right_zq"))
                .unwrap();
            assert!(
                f.file.as_deref().is_some_and(|p| p.ends_with("abba.c")),
                "{dump}"
            );
            assert_eq!(f.line, Some(l_line), "{dump}");
            assert!(!f.inlined);
            assert!(
                frames.iter().any(|f| f
                    .function
                    .as_deref()
                    .is_some_and(|n| n.contains("pthread_mutex_lock"))),
                "{dump}"
            );
            assert!(
                has_fn(&frames, "left_main") || has_fn(&frames, "start_thread"),
                "{dump}"
            );
        } else if has_fn(&frames, "take_right_then_left_zq") {
            seen.1 = true;
            let i = frames
                .iter()
                .position(|f| f.function.as_deref() == Some("acquire_inl"))
                .expect(&dump);
            assert!(frames[i].inlined, "{dump}");
            assert_eq!(frames[i].line, Some(inl_line), "{dump}");
            assert_eq!(
                frames[i + 1].function.as_deref(),
                Some("take_right_then_left_zq"),
                "{dump}"
            );
            assert_eq!(frames[i + 1].line, Some(r_line), "{dump}");
            assert_eq!(frames[i].addr, frames[i + 1].addr);
        } else if has_fn(&frames, "main") {
            // (pthread_join tail-calls __pthread_clockjoin_ex, a name only
            // libc's detached debug info has.)
            seen.2 = true;
        }
    }
    assert_eq!(
        seen,
        (true, true, true),
        "left, right and main threads found"
    );

    // Registers from BPF would carry bp too; sp = 0 means "read /proc".
    let frames = native_stack(pid, blocked[1], Regs::default()).unwrap();
    assert!(frames.len() >= 3);
    // Nonsense registers give an error or a short stack, never a panic.
    let _ = native_stack(
        pid,
        blocked[1],
        Regs {
            ip: 1,
            sp: 8,
            bp: 0,
        },
    );
    let _ = native_stack(
        pid,
        blocked[1],
        Regs {
            ip: left,
            sp: left,
            bp: 0,
        },
    );
}

#[test]
fn c_abba_stripped_gives_module_offsets() {
    if !have("gcc") || !have("strip") {
        crate::testenv::missing("gcc or strip is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "abba", ABBA_C);
    let stripped = dir.path().join("abba_stripped");
    std::fs::copy(&exe, &stripped).unwrap();
    run(Command::new("strip").arg(&stripped));
    let (t, left, _, blocked) = start_abba(&stripped);
    let pid = t.pid();
    // Also without libc's detached debug info: libc frames keep their
    // exported (.dynsym) names.
    let mut s = Symbolizer::without_debug_dirs();
    // No symbol table: no name, and no crash.
    assert_eq!(s.data_symbol(pid, left), None);
    let mut own = 0;
    for (tid, frames) in stacks_from_proc(&mut s, pid, &blocked) {
        let dump = show(&frames);
        eprintln!("thread {tid}:\n{dump}");
        // .eh_frame survives strip: unwinding goes through the program into libc's start_thread.
        assert!(frames.len() >= 3, "{dump}");
        for f in frames.iter().filter(|f| {
            f.module
                .as_deref()
                .is_some_and(|m| m.ends_with("/abba_stripped"))
        }) {
            own += 1;
            assert!(f.file.is_none() && f.line.is_none(), "{dump}");
            assert!(
                f.function.as_deref().is_none_or(|n| !n.contains("_zq")),
                "{dump}"
            );
            assert!(f.module_offset > 0 && f.module_offset < 0x10000, "{dump}");
        }
    }
    assert!(own >= 3, "frames in the stripped program itself");
}

#[test]
fn c_abba_debuglink_gives_lines() {
    if !have("gcc") || !have("objcopy") {
        crate::testenv::missing("gcc or objcopy is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "abba", ABBA_C);
    let dbg = dir.path().join("abba.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&dbg));
    run(Command::new("objcopy")
        .args(["--strip-debug", "--strip-unneeded"])
        .arg(&exe));
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", dbg.display()))
        .arg(&exe));
    let (t, left, _, blocked) = start_abba(&exe);
    let pid = t.pid();
    let mut s = Symbolizer::new();
    let l_line = line_of(ABBA_C, "BLOCK_LEFT");
    let stacks = stacks_from_proc(&mut s, pid, &blocked);
    let all: Vec<&Frame> = stacks.iter().flat_map(|(_, f)| f).collect();
    let f = all
        .iter()
        .find(|f| f.function.as_deref() == Some("take_left_then_right_zq"))
        .unwrap_or_else(|| {
            panic!(
                "{}",
                stacks.iter().map(|(_, f)| show(f)).collect::<String>()
            )
        });
    assert_eq!(f.line, Some(l_line));
    // The global comes from the debug file's symbol table.
    let sym = s.data_symbol(pid, left).map(|d| d.name);
    eprintln!("lock_left via debuglink: {sym:?}");
    assert_eq!(sym.as_deref(), Some("lock_left"));
}

/// Python ABBA on `threading.Lock`, with threads named alpha and beta.
const ABBA_PY: &str = r#"import os, signal, threading
signal.alarm(120)
lock_a = threading.Lock()
lock_b = threading.Lock()
barrier = threading.Barrier(2)

def alpha_takes_a_then_b():
    with lock_a:
        barrier.wait()
        lock_b.acquire()  # BLOCK_ALPHA

def beta_takes_b_then_a():
    with lock_b:
        barrier.wait()
        lock_a.acquire()  # BLOCK_BETA

def spinner_holds_gil():
    x = 0
    while True:
        x += 1

threads = [threading.Thread(target=alpha_takes_a_then_b, name="alpha"),
           threading.Thread(target=beta_takes_b_then_a, name="beta")]
for t in threads:
    t.start()
threading.Thread(target=spinner_holds_gil, name="spinner", daemon=True).start()
print(os.getpid(), flush=True)
for t in threads:
    t.join()
"#;

fn python_abba(python: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("abba.py");
    std::fs::write(&script, ABBA_PY).unwrap();
    let t = Target::spawn(Command::new(python).arg(&script));
    let pid: u32 = t.line().trim().parse().unwrap();
    assert_eq!(pid, t.pid(), "{python} must exec, not fork");
    let blocked = wait_blocked(pid, 3);
    let mut s = Symbolizer::new();
    let t0 = Instant::now();
    let threads = s
        .python_threads(pid)
        .expect("py-spy reads the interpreter")
        .expect("a Python process");
    let first = t0.elapsed();
    let t1 = Instant::now();
    let _ = s.python_threads(pid);
    eprintln!(
        "TIMING: {python}: py-spy attach + stacks {:.1} ms, again {:.1} ms",
        first.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
    let dump = format!("{threads:#?}");
    let (a_line, b_line) = (
        line_of(ABBA_PY, "BLOCK_ALPHA") as i32,
        line_of(ABBA_PY, "BLOCK_BETA") as i32,
    );
    for (name, func, line) in [
        ("alpha", "alpha_takes_a_then_b", a_line),
        ("beta", "beta_takes_b_then_a", b_line),
    ] {
        let th = threads
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name}: {dump}"));
        assert!(
            blocked.contains(&th.tid),
            "{name} has a blocked OS thread id: {dump}"
        );
        let top = th.frames.first().unwrap_or_else(|| panic!("{dump}"));
        assert_eq!((top.function.as_str(), top.line), (func, line), "{dump}");
        assert!(top.file.ends_with("abba.py"), "{dump}");
        assert!(
            !th.owns_gil,
            "a thread blocked in acquire released the GIL: {dump}"
        );
    }
    assert!(
        threads
            .iter()
            .any(|t| t.name.as_deref() == Some("MainThread")),
        "{dump}"
    );
    // The only runnable Python thread holds the GIL (it keeps it: nobody
    // asks for it). Read a few times: the spinner is caught mid-bytecode.
    let holder = (0..20).find_map(|_| {
        let th = s.python_threads(pid).ok()??;
        th.into_iter().find(|t| t.owns_gil)
    });
    let holder = holder.unwrap_or_else(|| panic!("no GIL holder found: {dump}"));
    assert_eq!(holder.name.as_deref(), Some("spinner"));
    assert!(
        holder
            .frames
            .first()
            .is_some_and(|f| f.function == "spinner_holds_gil"),
        "{holder:?}"
    );
    // Native stacks of Python threads go through libpython's lock code.
    let alpha = threads
        .iter()
        .find(|t| t.name.as_deref() == Some("alpha"))
        .unwrap()
        .tid;
    let frames = s.native_stack(pid, alpha, Regs::default()).unwrap();
    eprintln!("{python} alpha native:\n{}", show(&frames));
    assert!(
        frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains("acquire"))),
        "{}",
        show(&frames)
    );
}

#[test]
fn python_abba_names_and_lines() {
    if !have("python3") {
        crate::testenv::missing("python3 is not installed");
        return;
    }
    python_abba("python3");
}

#[test]
fn python_abba_other_versions() {
    let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
    for v in ["3.12", "3.13"] {
        let Some(dir) = std::fs::read_dir(format!("{root}/versions"))
            .ok()
            .and_then(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{v}.")))
                    })
                    .max()
            })
        else {
            crate::testenv::missing(&format!("no Python {v} under {root}"));
            continue;
        };
        python_abba(&dir.join("bin/python3").to_string_lossy());
    }
}

#[test]
fn not_python_is_none() {
    if !have("sleep") {
        crate::testenv::missing("sleep is not installed");
        return;
    }
    let t = Target::spawn(Command::new("sleep").arg("30"));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Wait for the exec to finish (maps of `sleep`, not of the test binary).
    while !std::fs::read_to_string(format!("/proc/{}/comm", t.pid()))
        .is_ok_and(|c| c.trim() == "sleep")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(python_threads(t.pid()).unwrap().is_none());
}

const MANY_C: &str = r#"#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#define N 64
pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
volatile int sink;
__attribute__((noinline, noclone)) void level3_wait(void) { pthread_mutex_lock(&big_lock); sink++; pthread_mutex_unlock(&big_lock); }
__attribute__((noinline, noclone)) void level2(int n) { if (n > 0) level2(n - 1); else level3_wait(); sink++; }
__attribute__((noinline, noclone)) void level1(void) { level2(8); sink++; }
static void *worker(void *arg) { level1(); sink++; return arg; }
int main(void) {
    alarm(120);
    pthread_t t[N];
    pthread_mutex_lock(&big_lock);
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, worker, NULL);
    printf("ready\n");
    fflush(stdout);
    pthread_join(t[0], NULL);
    return 0;
}
"#;

fn start_many(dir: &Path) -> (Target, Vec<u32>) {
    let exe = compile(dir, "many", MANY_C);
    let t = Target::spawn(&mut Command::new(&exe));
    assert_eq!(t.line(), "ready");
    let blocked = wait_blocked(t.pid(), 65);
    (t, blocked)
}

/// 65 blocked threads (64 workers 12 frames deep, and main): all unwound
/// and symbolized (the time is printed).
#[test]
fn sixty_four_threads_timing() {
    if !have("gcc") {
        crate::testenv::missing("gcc is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = start_many(dir.path());
    let pid = t.pid();
    let mut s = Symbolizer::new();
    let t0 = Instant::now();
    let cold = s.blocked_stacks(pid).unwrap();
    let cold_t = t0.elapsed();
    let t1 = Instant::now();
    let warm = s.blocked_stacks(pid).unwrap();
    let warm_t = t1.elapsed();
    assert_eq!(cold.len(), 65);
    let frames: usize = warm
        .iter()
        .map(|(_, r)| r.as_ref().map_or(0, |f| f.len()))
        .sum();
    for (tid, r) in &warm {
        let f = r.as_ref().unwrap();
        assert!(
            has_fn(f, "main")
                || f.iter()
                    .filter(|f| f.function.as_deref() == Some("level2"))
                    .count()
                    == 9,
            "{tid}:\n{}",
            show(f)
        );
    }
    eprintln!(
        "TIMING: 65 threads, {frames} frames: cold (parse + unwind + symbolize) {:.1} ms, warm {:.1} ms",
        cold_t.as_secs_f64() * 1e3,
        warm_t.as_secs_f64() * 1e3
    );
    // No bound on the time here: on a shared machine it measures the load
    // (the deep benchmark compares it with gdb in the same run).
}

// The comparison with gdb's `thread apply all bt` on the same process is in
// the deep benchmark (`./x bench deep`), where it is timed alongside.

/// Symbolizers that share what is parsed per file give each process the
/// same frames and globals an unshared one gives, and keep their processes
/// apart (one's mappings are not another's).
#[test]
fn shared_files_symbolize_like_unshared() {
    if !have("gcc") {
        crate::testenv::missing("gcc is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path(), "abba", ABBA_C);
    let files = SharedFiles::new();
    let mut first = Symbolizer::sharing(files.clone());
    let mut second = Symbolizer::sharing(files);
    // Frames without their addresses (ASLR differs between processes).
    let strip = |frames: &[Frame]| -> Vec<Frame> {
        frames
            .iter()
            .map(|f| Frame {
                addr: 0,
                ..f.clone()
            })
            .collect()
    };
    let mut seen = Vec::new();
    for s in [&mut first, &mut second] {
        let (t, left, _, mut blocked) = start_abba(&exe);
        let pid = t.pid();
        blocked.sort_unstable();
        let shared = stacks_from_proc(s, pid, &blocked);
        let own = stacks_from_proc(&mut Symbolizer::new(), pid, &blocked);
        assert_eq!(shared.len(), 3);
        for ((_, a), (_, b)) in shared.iter().zip(&own) {
            assert_eq!(strip(a), strip(b), "shared:\n{}own:\n{}", show(a), show(b));
        }
        // libc's frames come with its debug info's lines where it has them.
        let libc_lines = shared
            .iter()
            .flat_map(|(_, f)| f)
            .filter(|f| f.module.as_deref().is_some_and(|m| m.contains("libc")))
            .any(|f| f.line.is_some());
        let own_libc_lines = own
            .iter()
            .flat_map(|(_, f)| f)
            .filter(|f| f.module.as_deref().is_some_and(|m| m.contains("libc")))
            .any(|f| f.line.is_some());
        assert_eq!(libc_lines, own_libc_lines);
        let sym = s.data_symbol(pid, left).expect("lock_left symbolized");
        assert_eq!((sym.name.as_str(), sym.offset), ("lock_left", 0));
        seen.push(pid);
        drop(t);
    }
    // Each one's recorded mappings are of its own process only.
    for (s, pid) in [(&mut first, seen[0]), (&mut second, seen[1])] {
        let pids: Vec<u32> = s.take_new_maps().into_iter().map(|(p, _)| p).collect();
        assert!(
            !pids.is_empty() && pids.iter().all(|&p| p == pid),
            "{pids:?}"
        );
    }
}
