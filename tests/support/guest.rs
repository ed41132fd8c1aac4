//! Runs shell scripts inside a QEMU guest that boots a Debian Linux kernel, so
//! system tests can drive Keel's NVMe/TCP target with the kernel's own
//! NVMe/TCP host driver, nvme-cli, fio and e2fsprogs.
//!
//! The images come from `tests/guest/prepare.sh` and the guest is started by
//! `tests/guest/run-guest.sh`; `tests/guest/README.md` describes both. Inside
//! the guest, `10.0.2.100:GUEST_PORT` reaches `127.0.0.1:HOST_PORT` on the host
//! for every forward passed in, with one host connection per guest connection.
//!
//! ```ignore
//! mod support;
//! use support::guest::{self, GuestKernel, GuestRun};
//!
//! let images = match guest::prepared() {
//!     Ok(images) => images,
//!     Err(reason) => return guest::skip_or_fail("my_test", &reason),
//! };
//! let outcome = GuestRun::new(GuestKernel::V6_12, "nvme discover -t tcp -a 10.0.2.100 -s 8009")
//!     .forward(8009, discovery_port)
//!     .run(&images);
//! outcome.assert_success();
//! ```

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The address under which the guest reaches forwarded host ports.
pub const HOST_ADDR_IN_GUEST: &str = "10.0.2.100";

/// Extra time the Rust side waits beyond the guest timeout before it stops
/// `run-guest.sh` itself; the script normally enforces the timeout first.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(30);

/// The environment variable that turns a missing guest setup into a skip.
pub const ALLOW_SKIP_ENV: &str = "KEEL_ALLOW_SKIP_GUEST";

/// A Linux kernel generation the guest can boot; the tests cover both the
/// long-term 6.1 kernel of Debian bookworm and the newer 6.12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKernel {
    /// Debian bookworm's `linux-image-amd64` (6.1 LTS).
    V6_1,
    /// Debian's `linux-image-6.12-amd64` (6.12 LTS).
    V6_12,
}

impl GuestKernel {
    /// Every generation, for tests that run against all of them.
    pub const ALL: [GuestKernel; 2] = [GuestKernel::V6_1, GuestKernel::V6_12];

    /// The name `run-guest.sh --kernel` and the image cache use.
    pub fn generation(self) -> &'static str {
        match self {
            GuestKernel::V6_1 => "6.1",
            GuestKernel::V6_12 => "6.12",
        }
    }
}

impl fmt::Display for GuestKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linux-{}", self.generation())
    }
}

/// Located, up-to-date guest images and the script that boots them.
#[derive(Clone, Debug)]
pub struct GuestImages {
    /// Where `prepare.sh` put the per-kernel images.
    pub cache_dir: PathBuf,
    /// `tests/guest/run-guest.sh`.
    pub run_script: PathBuf,
}

impl GuestImages {
    /// The `uname -r` of the kernel the guest boots for `kernel`.
    pub fn kernel_release(&self, kernel: GuestKernel) -> Option<String> {
        let path = self
            .cache_dir
            .join(kernel.generation())
            .join("kernel-release");
        fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
    }
}

/// What a guest run produced.
#[derive(Clone, Debug)]
pub struct GuestOutcome {
    /// The script's exit code; `None` when the guest timed out or stopped
    /// without reporting one (boot failure, kernel panic).
    pub exit_code: Option<i32>,
    /// Whether the run was stopped by its timeout.
    pub timed_out: bool,
    /// The whole serial console, with carriage returns removed.
    pub console_log: String,
    /// Where the console log was saved (under the cargo target directory).
    pub log_path: PathBuf,
    /// Wall-clock time of the whole run, boot and power-off included.
    pub elapsed: Duration,
}

impl GuestOutcome {
    /// The console lines the script printed: everything between the begin
    /// and end markers the guest init writes (kernel warnings may interleave).
    pub fn script_output(&self) -> &str {
        const BEGIN: &str = "KEEL-GUEST-SCRIPT-BEGIN\n";
        const END: &str = "KEEL-GUEST-SCRIPT-END\n";
        let Some(start) = self.console_log.find(BEGIN) else {
            return "";
        };
        let rest = &self.console_log[start + BEGIN.len()..];
        match rest.rfind(END) {
            Some(end) => &rest[..end],
            None => rest,
        }
    }

    /// Panics with the console log unless the script exited with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.exit_code == Some(0),
            "guest script failed: exit_code={:?} timed_out={} (log: {})\n{}",
            self.exit_code,
            self.timed_out,
            self.log_path.display(),
            self.console_log
        );
    }
}

/// Locates the guest images, bringing them up to date with `prepare.sh` when
/// this process may (root). Returns why the guest cannot run otherwise, so a
/// test can report a loud skip via [`skip_or_fail`].
pub fn prepared() -> Result<GuestImages, String> {
    static PREPARED: OnceLock<Result<GuestImages, String>> = OnceLock::new();
    PREPARED.get_or_init(locate_and_prepare).clone()
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("guest")
}

fn cache_dir() -> PathBuf {
    env::var_os("KEEL_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/keel-guest"))
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn images_present(cache: &Path) -> bool {
    GuestKernel::ALL.iter().all(|kernel| {
        let dir = cache.join(kernel.generation());
        dir.join("vmlinux").is_file() && dir.join("initramfs.cpio").is_file()
    })
}

fn locate_and_prepare() -> Result<GuestImages, String> {
    for program in ["qemu-system-x86_64", "socat"] {
        if !on_path(program) {
            return Err(format!(
                "{program} is not installed; run `sudo tests/guest/prepare.sh` first"
            ));
        }
    }
    let dir = guest_dir();
    let cache = cache_dir();
    if is_root() {
        // prepare.sh is idempotent (a few seconds when up to date) and
        // serialises concurrent callers with a lock, so every test process
        // runs it once to pick up changes to the guest init or packages.
        let status = Command::new(dir.join("prepare.sh"))
            .arg(&cache)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run tests/guest/prepare.sh: {e}"))?;
        if !status.success() {
            return Err(format!("tests/guest/prepare.sh failed ({status})"));
        }
    }
    if !images_present(&cache) {
        return Err(format!(
            "no guest images in {}; run `sudo tests/guest/prepare.sh` first",
            cache.display()
        ));
    }
    Ok(GuestImages {
        cache_dir: cache,
        run_script: dir.join("run-guest.sh"),
    })
}

/// Reports that a guest test cannot run. Prints a loud SKIPPED banner to
/// stderr, then returns (the test passes as skipped) only when
/// `KEEL_ALLOW_SKIP_GUEST=1`; otherwise panics, so CI that ran `prepare.sh`
/// can never skip silently.
pub fn skip_or_fail(test: &str, reason: &str) {
    let allowed = env::var(ALLOW_SKIP_ENV).map(|v| v == "1").unwrap_or(false);
    eprintln!();
    eprintln!("################################################################");
    eprintln!("## SKIPPED {test}: the QEMU guest is unavailable");
    eprintln!("## reason: {reason}");
    eprintln!("## fix: sudo tests/guest/prepare.sh");
    if !allowed {
        eprintln!("## (set {ALLOW_SKIP_ENV}=1 to let this skip pass)");
    }
    eprintln!("################################################################");
    assert!(
        allowed,
        "{test}: guest unavailable and {ALLOW_SKIP_ENV} is not 1: {reason}"
    );
}

/// One guest run: which kernel, the script, forwards and limits.
#[derive(Clone, Debug)]
pub struct GuestRun {
    kernel: GuestKernel,
    script: String,
    forwards: Vec<(u16, u16)>,
    host_forwards: Vec<(u16, u16)>,
    timeout: Duration,
    hostnqn: Option<String>,
    env: Vec<(String, String)>,
    memory_mib: u32,
    name: String,
    netns: Option<String>,
}

impl GuestRun {
    /// A run of `script` (bash, executed as root in the guest) on `kernel`,
    /// with a 300 s timeout and no forwards.
    pub fn new(kernel: GuestKernel, script: &str) -> GuestRun {
        GuestRun {
            kernel,
            script: script.to_owned(),
            forwards: Vec::new(),
            host_forwards: Vec::new(),
            timeout: Duration::from_secs(300),
            hostnqn: None,
            env: Vec::new(),
            memory_mib: 1024,
            name: current_test_name(),
            netns: None,
        }
    }

    /// Lets the guest reach `127.0.0.1:host_port` as `10.0.2.100:guest_port`.
    pub fn forward(mut self, guest_port: u16, host_port: u16) -> GuestRun {
        self.forwards.push((guest_port, host_port));
        self
    }

    /// Bounds the whole run (boot, script, power-off); the guest is killed then.
    pub fn timeout(mut self, timeout: Duration) -> GuestRun {
        self.timeout = timeout;
        self
    }

    /// Lets the host reach a server in the guest: `127.0.0.1:host_port` on the
    /// host connects to the guest's `guest_port` (QEMU hostfwd). Used to run
    /// the kernel's reference target (see [`reference_target_script`]).
    pub fn host_forward(mut self, host_port: u16, guest_port: u16) -> GuestRun {
        self.host_forwards.push((host_port, guest_port));
        self
    }

    /// Sets the guest's `/etc/nvme/hostnqn` (a random one is generated otherwise).
    pub fn hostnqn(mut self, nqn: &str) -> GuestRun {
        self.hostnqn = Some(nqn.to_owned());
        self
    }

    /// Exports `name=value` to the script.
    pub fn env(mut self, name: &str, value: &str) -> GuestRun {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Guest memory in MiB (default 1024; the initramfs takes ~200 MiB of it).
    pub fn memory_mib(mut self, memory_mib: u32) -> GuestRun {
        self.memory_mib = memory_mib;
        self
    }

    /// Attaches the guest to the tap device of `netns` instead of QEMU user
    /// networking: the guest reaches `10.0.2.100:PORT` inside the namespace
    /// directly, so forwards are not used (run-guest.sh rejects them).
    pub fn netns(mut self, netns: &GuestNetns) -> GuestRun {
        self.netns = Some(netns.name.clone());
        self
    }

    /// Names the console log file (default: the current test's name).
    pub fn name(mut self, name: &str) -> GuestRun {
        self.name = name.to_owned();
        self
    }

    /// Boots the guest, runs the script and returns what happened. Panics only
    /// when the run cannot be started at all (missing script, I/O errors).
    pub fn run(&self, images: &GuestImages) -> GuestOutcome {
        let log_path = next_log_path(&self.name, self.kernel);
        let script_path = log_path.with_extension("script.sh");
        fs::write(&script_path, &self.script)
            .unwrap_or_else(|e| panic!("write {}: {e}", script_path.display()));

        let timeout_secs = self.timeout.as_secs().max(1);
        let mut command = Command::new(&images.run_script);
        command
            .arg("--kernel")
            .arg(self.kernel.generation())
            .arg("--script")
            .arg(&script_path)
            .arg("--timeout")
            .arg(timeout_secs.to_string())
            .arg("--log")
            .arg(&log_path)
            .arg("--mem")
            .arg(self.memory_mib.to_string())
            .arg("--cache")
            .arg(&images.cache_dir)
            .arg("--quiet");
        for (guest_port, host_port) in &self.forwards {
            command
                .arg("--fwd")
                .arg(format!("{guest_port}:{host_port}"));
        }
        for (host_port, guest_port) in &self.host_forwards {
            command
                .arg("--hostfwd")
                .arg(format!("{host_port}:{guest_port}"));
        }
        if let Some(netns) = &self.netns {
            command.arg("--netns").arg(netns);
        }
        if let Some(nqn) = &self.hostnqn {
            command.arg("--hostnqn").arg(nqn);
        }
        for (name, value) in &self.env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());

        let started = Instant::now();
        let (status, stderr) = supervise(
            command,
            Duration::from_secs(timeout_secs) + SUPERVISOR_GRACE,
        )
        .unwrap_or_else(|e| panic!("run {}: {e}", images.run_script.display()));
        let elapsed = started.elapsed();

        let console_log = fs::read(&log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\r', ""))
            .unwrap_or_default();
        let exit_code = parse_exit_code(&console_log);
        let timed_out =
            status.map(|s| s.code() == Some(124)).unwrap_or(true) && exit_code.is_none();
        if exit_code.is_none() && !stderr.is_empty() {
            eprintln!("run-guest.sh: {stderr}");
        }
        GuestOutcome {
            exit_code,
            timed_out,
            console_log,
            log_path,
            elapsed,
        }
    }
}

/// A shell snippet that makes the guest serve `nqn` with the Linux kernel's
/// own NVMe/TCP target (nvmet) on 10.0.2.15:`port`, backed by a sparse file
/// of `size_mib` MiB. It is the reference to compare Keel against: a script
/// that passes with it and fails with Keel points at Keel. Combine with
/// [`GuestRun::host_forward`] and [`GuestRun::forward`] so the guest's host
/// driver reaches it through the same forwarder a Keel test uses.
pub fn reference_target_script(nqn: &str, port: u16, size_mib: u32) -> String {
    format!(
        r#"modprobe nvmet-tcp
cfs=/sys/kernel/config/nvmet
truncate -s {size_mib}M /tmp/reference-ns.img
mkdir "$cfs/subsystems/{nqn}"
echo 1 > "$cfs/subsystems/{nqn}/attr_allow_any_host"
mkdir "$cfs/subsystems/{nqn}/namespaces/1"
echo /tmp/reference-ns.img > "$cfs/subsystems/{nqn}/namespaces/1/device_path"
# The file lives on tmpfs, which has no O_DIRECT before Linux 6.6.
echo 1 > "$cfs/subsystems/{nqn}/namespaces/1/buffered_io"
echo 1 > "$cfs/subsystems/{nqn}/namespaces/1/enable"
mkdir "$cfs/ports/1"
echo tcp > "$cfs/ports/1/addr_trtype"
echo ipv4 > "$cfs/ports/1/addr_adrfam"
echo 10.0.2.15 > "$cfs/ports/1/addr_traddr"
echo {port} > "$cfs/ports/1/addr_trsvcid"
ln -s "$cfs/subsystems/{nqn}" "$cfs/ports/1/subsystems/{nqn}"
"#
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a host forward
/// (QEMU binds it itself, so it cannot be handed an open socket).
pub fn free_local_port() -> u16 {
    let [port] = super::ports::unused_ports();
    port
}

/// A network namespace holding the tap device a guest attaches to with
/// [`GuestRun::netns`], for tests that want the guest's traffic to skip the
/// user-networking forwarder (about 20-30% more throughput, see the README).
/// Start the host side inside it with [`GuestNetns::command`], bound to
/// [`HOST_ADDR_IN_GUEST`]. Deleted on drop.
#[derive(Debug)]
pub struct GuestNetns {
    name: String,
}

impl GuestNetns {
    /// Creates a namespace with a name unique to this process (needs root).
    pub fn create() -> Result<GuestNetns, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("keel-{}-{seq}", std::process::id());
        let status = Command::new(guest_dir().join("netns.sh"))
            .arg("create")
            .arg(&name)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run tests/guest/netns.sh: {e}"))?;
        if !status.success() {
            return Err(format!(
                "tests/guest/netns.sh create {name} failed ({status})"
            ));
        }
        Ok(GuestNetns { name })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`
    /// execs it in place, so the child's pid is the program's pid).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .arg("netns")
            .arg("exec")
            .arg(&self.name)
            .arg(program);
        command
    }
}

impl Drop for GuestNetns {
    fn drop(&mut self) {
        let _ = Command::new(guest_dir().join("netns.sh"))
            .arg("delete")
            .arg(&self.name)
            .stdin(Stdio::null())
            .status();
    }
}

/// Runs `script` on `kernel` with the given `(guest_port, host_port)`
/// forwards. Panics with the reason if the guest images are unavailable; call
/// [`prepared`] first to skip loudly instead.
pub fn run_guest(
    kernel: GuestKernel,
    script: &str,
    forwards: &[(u16, u16)],
    timeout: Duration,
) -> GuestOutcome {
    let images = prepared().unwrap_or_else(|reason| panic!("guest unavailable: {reason}"));
    let mut run = GuestRun::new(kernel, script).timeout(timeout);
    for &(guest_port, host_port) in forwards {
        run = run.forward(guest_port, host_port);
    }
    run.run(&images)
}

/// Waits for the child with a bound. Returns `None` as status when the bound
/// expired and the child had to be stopped.
fn supervise(mut command: Command, bound: Duration) -> io::Result<(Option<ExitStatus>, String)> {
    let mut child = command.spawn()?;
    let pid = child.id();
    let mut stderr_pipe = child.stderr.take();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut stderr = String::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = io::Read::read_to_string(pipe, &mut stderr);
        }
        let status = child.wait();
        let _ = done_tx.send(());
        (status, stderr)
    });
    let expired = done_rx.recv_timeout(bound).is_err();
    if expired {
        // SIGTERM, not SIGKILL: run-guest.sh traps it and kills its QEMU.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    let (status, stderr) = waiter
        .join()
        .map_err(|_| io::Error::other("waiter thread panicked"))?;
    let status = status?;
    Ok((
        if expired { None } else { Some(status) },
        stderr.trim().to_owned(),
    ))
}

/// The last `KEEL-GUEST-EXIT-CODE: N` line the guest init printed.
fn parse_exit_code(console_log: &str) -> Option<i32> {
    console_log.lines().rev().find_map(|line| {
        let at = line.find("KEEL-GUEST-EXIT-CODE: ")?;
        line[at + "KEEL-GUEST-EXIT-CODE: ".len()..]
            .trim()
            .parse()
            .ok()
    })
}

fn current_test_name() -> String {
    let name = thread::current().name().unwrap_or("guest").to_owned();
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn next_log_path(name: &str, kernel: GuestKernel) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-logs");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{name}-{}-{}-{seq}.log",
        kernel.generation(),
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(console_log: &str) -> GuestOutcome {
        GuestOutcome {
            exit_code: parse_exit_code(console_log),
            timed_out: false,
            console_log: console_log.to_owned(),
            log_path: PathBuf::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn exit_code_is_the_last_marker_even_after_kernel_noise() {
        let log =
            "boot\nKEEL-GUEST-EXIT-CODE: 3\n[ 1.0] x KEEL-GUEST-EXIT-CODE: 42\n[ 2.0] reboot\n";
        assert_eq!(parse_exit_code(log), Some(42));
        assert_eq!(parse_exit_code("boot\n[ 1.0] Kernel panic\n"), None);
    }

    #[test]
    fn script_output_is_between_the_markers() {
        let o = outcome("noise\nKEEL-GUEST-SCRIPT-BEGIN\na\nb\nKEEL-GUEST-SCRIPT-END\nKEEL-GUEST-EXIT-CODE: 0\n");
        assert_eq!(o.script_output(), "a\nb\n");
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(outcome("no markers").script_output(), "");
    }
}
