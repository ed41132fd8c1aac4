//! Proves the QEMU guest harness works on both kernel generations: the
//! NVMe/TCP host modules load, every tool the NVMe system tests use runs, and
//! the guest can hold several TCP connections to a host port at once, as an
//! NVMe/TCP host does (one admin queue plus one connection per I/O queue).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::guest::{self, GuestKernel, GuestNetns, GuestRun};

/// Connections the guest opens at once; the listener answers none of them
/// until all are open, so a forwarder that serialises connections fails.
const CONCURRENT_CONNECTIONS: usize = 4;
const ECHO_PORT_IN_GUEST: u16 = 7000;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts exactly `count` connections, then answers each one's line with
/// `echo:<line>`. Returns the port, a flag that makes the thread give up at
/// its next accept, and the thread's handle, which yields how many
/// connections were served.
fn spawn_barrier_echo(
    count: usize,
) -> (
    u16,
    Arc<AtomicBool>,
    thread::JoinHandle<Result<usize, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo listener");
    let port = listener.local_addr().expect("local addr").port();
    let abandon = Arc::new(AtomicBool::new(false));
    let abandoned = Arc::clone(&abandon);
    let handle = thread::spawn(move || {
        let mut streams = Vec::with_capacity(count);
        for _ in 0..count {
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            if abandoned.load(Ordering::SeqCst) {
                return Err(format!(
                    "only {} of {count} connections arrived",
                    streams.len()
                ));
            }
            streams.push(stream);
        }
        let mut served = 0;
        for stream in streams {
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(&stream)
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let mut writer = &stream;
            writer
                .write_all(format!("echo:{}\n", line.trim()).as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            let _ = stream.shutdown(Shutdown::Both);
            served += 1;
        }
        Ok(served)
    });
    (port, abandon, handle)
}

fn guest_script(connections: usize) -> String {
    format!(
        r#"set -u
fail=0
check() {{ echo "+ $*"; "$@" || {{ echo "FAILED($?): $*"; fail=1; }}; }}
check modprobe nvme-tcp
grep -q '^nvme_tcp ' /proc/modules && echo "module nvme_tcp loaded"
test -c /dev/nvme-fabrics && echo "/dev/nvme-fabrics present"
echo "hostnqn: $(cat /etc/nvme/hostnqn)"
check nvme version
check nvme list
for sub in discover connect disconnect list id-ctrl id-ns; do
    nvme "$sub" --help 2>&1 | head -n 1 | sed 's/\x1b\[[0-9;]*m//g'
done
check fio --version
check fio --name=libaio --filename=/tmp/fio.dat --size=1M --bs=4k --rw=randwrite \
    --ioengine=libaio --iodepth=4 --verify=crc32c --minimal
check fio --name=psync --filename=/tmp/fio.dat --size=1M --bs=4k --rw=write \
    --ioengine=psync --verify=md5 --minimal
check mkfs.ext4 -V
check e2fsck -V
check sha256sum --version
check blkdiscard -V
# A loop device stands in for a namespace: discard, mkfs, mount, checksum.
truncate -s 32M /tmp/disk.img
dev=$(losetup -f)
check losetup "$dev" /tmp/disk.img
check blkdiscard "$dev"
check mkfs.ext4 -q -F "$dev"
mkdir -p /mnt/t
check mount -t ext4 "$dev" /mnt/t
echo keel > /mnt/t/f
sha256sum /mnt/t/f
check umount /mnt/t
check e2fsck -fn "$dev"
# Concurrent connections through the forward: all must be open at once.
for i in $(seq 1 {connections}); do
    (printf 'conn%d\n' "$i" | socat -t 60 - TCP:$KEEL_HOST_ADDR:{port} > /tmp/echo.$i) &
done
wait
for i in $(seq 1 {connections}); do echo "reply $i: $(cat /tmp/echo.$i)"; done
exit $fail
"#,
        port = ECHO_PORT_IN_GUEST,
    )
}

fn boots_and_runs_tooling(kernel: GuestKernel, test: &str) {
    let images = match guest::prepared() {
        Ok(images) => images,
        Err(reason) => return guest::skip_or_fail(test, &reason),
    };
    let (echo_port, abandon, echo) = spawn_barrier_echo(CONCURRENT_CONNECTIONS);
    let outcome = GuestRun::new(kernel, &guest_script(CONCURRENT_CONNECTIONS))
        .forward(ECHO_PORT_IN_GUEST, echo_port)
        .hostnqn("nqn.2014-08.io.keel:guest-boot")
        .timeout(Duration::from_secs(240))
        .run(&images);

    if !echo.is_finished() {
        // The guest never opened every connection; unblock accept() so the
        // thread ends and the assertions below report the console log.
        abandon.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", echo_port));
    }
    let served = echo.join().expect("echo thread");
    eprintln!(
        "{kernel}: guest run took {:?} (log: {})",
        outcome.elapsed,
        outcome.log_path.display()
    );
    outcome.assert_success();

    let out = outcome.script_output();
    let expect = |needle: &str| {
        assert!(
            out.contains(needle),
            "{kernel}: missing {needle:?} in guest output:\n{out}"
        );
    };
    if let Some(release) = images.kernel_release(kernel) {
        assert!(
            release.starts_with(kernel.generation()),
            "{release} is not {kernel}"
        );
    }
    expect("module nvme_tcp loaded");
    expect("/dev/nvme-fabrics present");
    expect("hostnqn: nqn.2014-08.io.keel:guest-boot");
    expect("nvme version 2.");
    expect("Node ");
    expect("libnvme version 1.");
    for sub in [
        "discover",
        "connect",
        "disconnect",
        "list",
        "id-ctrl",
        "id-ns",
    ] {
        expect(&format!("Usage: nvme {sub} "));
    }
    expect("fio-3.");
    expect(";fio-3.");
    expect("mke2fs 1.");
    expect("e2fsck 1.");
    expect("sha256sum (GNU coreutils)");
    expect("blkdiscard from util-linux");
    // sha256 of "keel\n", written on ext4 and read back.
    expect("7fdd2029fc0e3a4249d59728a5063a2fd9c21cf9170efa3ec968d2b0f5c3b184  /mnt/t/f");
    assert_eq!(
        served,
        Ok(CONCURRENT_CONNECTIONS),
        "{kernel}: echo listener:\n{out}"
    );
    for i in 1..=CONCURRENT_CONNECTIONS {
        expect(&format!("reply {i}: echo:conn{i}"));
    }
}

#[test]
fn linux_6_1_guest_runs_nvme_tcp_tooling_and_concurrent_forwards() {
    boots_and_runs_tooling(GuestKernel::V6_1, "linux_6_1_guest_runs_nvme_tcp_tooling");
}

#[test]
fn linux_6_12_guest_runs_nvme_tcp_tooling_and_concurrent_forwards() {
    boots_and_runs_tooling(GuestKernel::V6_12, "linux_6_12_guest_runs_nvme_tcp_tooling");
}

/// Starts a socat echo server inside `netns` on 10.0.2.100:`port` and waits
/// (bounded) until it listens.
fn spawn_netns_echo(netns: &GuestNetns, port: u16) -> Child {
    let mut child = netns
        .command("socat")
        .arg("-d")
        .arg("-d")
        .arg(format!(
            "TCP-LISTEN:{port},bind={},fork,reuseaddr",
            guest::HOST_ADDR_IN_GUEST
        ))
        .arg("EXEC:cat")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socat in the namespace");
    let stderr = child.stderr.take().expect("socat stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = child.kill();
        panic!(
            "socat did not start listening in namespace {}",
            netns.name()
        );
    }
    child
}

#[test]
fn netns_guest_reaches_listener_inside_the_namespace_over_tap() {
    let test = "netns_guest_reaches_listener_inside_the_namespace_over_tap";
    let images = match guest::prepared() {
        Ok(images) => images,
        Err(reason) => return guest::skip_or_fail(test, &reason),
    };
    let netns = match GuestNetns::create() {
        Ok(netns) => netns,
        Err(reason) => return guest::skip_or_fail(test, &reason),
    };
    let mut echo = spawn_netns_echo(&netns, ECHO_PORT_IN_GUEST);
    let script = format!(
        r#"for i in $(seq 1 {CONCURRENT_CONNECTIONS}); do
    (printf 'conn%d\n' "$i" | socat -t 30 - TCP:$KEEL_HOST_ADDR:{ECHO_PORT_IN_GUEST} > /tmp/echo.$i) &
done
wait
for i in $(seq 1 {CONCURRENT_CONNECTIONS}); do echo "reply $i: $(cat /tmp/echo.$i)"; done
"#
    );
    let outcome = GuestRun::new(GuestKernel::V6_12, &script)
        .netns(&netns)
        .timeout(Duration::from_secs(180))
        .run(&images);
    let _ = echo.kill();
    let _ = echo.wait();
    outcome.assert_success();
    for i in 1..=CONCURRENT_CONNECTIONS {
        let needle = format!("reply {i}: conn{i}");
        assert!(
            outcome.script_output().contains(&needle),
            "missing {needle:?}:\n{}",
            outcome.console_log
        );
    }
}

/// The guest serves a namespace with the kernel's own target (nvmet) and its
/// host driver reaches it through the same guestfwd/socat path a Keel test
/// uses, with digests and two I/O queues (three TCP connections): the
/// harness is proven on real NVMe/TCP independently of Keel.
fn reference_target_round_trip(kernel: GuestKernel, test: &str) {
    let images = match guest::prepared() {
        Ok(images) => images,
        Err(reason) => return guest::skip_or_fail(test, &reason),
    };
    const NQN: &str = "nqn.2024-01.io.keel:reference";
    const TARGET_PORT_IN_GUEST: u16 = 4420;
    const FORWARDED_PORT_IN_GUEST: u16 = 4430;
    let relay_port = guest::free_local_port();
    let script = format!(
        r#"set -eu
{setup}
nvme discover -t tcp -a $KEEL_HOST_ADDR -s {fwd}
nvme connect -t tcp -a $KEEL_HOST_ADDR -s {fwd} -n {NQN} --nr-write-queues=1 --hdr-digest --data-digest
for i in $(seq 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
echo "queues: $(cat /sys/class/nvme/nvme0/queue_count)"
echo "address: $(cat /sys/class/nvme/nvme0/address)"
nvme list
nvme id-ctrl /dev/nvme0 | grep -E '^(mn|subnqn) '
nvme id-ns /dev/nvme0n1 | grep -E '^nsze '
t0=${{EPOCHREALTIME/./}}
fio --name=verify --filename=/dev/nvme0n1 --size=8M --bs=64k --rw=write \
    --ioengine=libaio --iodepth=4 --direct=1 --verify=crc32c --minimal | cut -d';' -f1-3
t1=${{EPOCHREALTIME/./}}
echo "fio 8 MiB write+verify: $(( (t1 - t0) / 1000 )) ms"
blkdiscard /dev/nvme0n1
mkfs.ext4 -q /dev/nvme0n1
mkdir -p /mnt/nvme
mount /dev/nvme0n1 /mnt/nvme
echo keel > /mnt/nvme/f
umount /mnt/nvme
mount /dev/nvme0n1 /mnt/nvme
sha256sum /mnt/nvme/f
umount /mnt/nvme
nvme disconnect -n {NQN}
"#,
        setup = guest::reference_target_script(NQN, TARGET_PORT_IN_GUEST, 64),
        fwd = FORWARDED_PORT_IN_GUEST,
    );
    let outcome = GuestRun::new(kernel, &script)
        .host_forward(relay_port, TARGET_PORT_IN_GUEST)
        .forward(FORWARDED_PORT_IN_GUEST, relay_port)
        .timeout(Duration::from_secs(300))
        .run(&images);
    eprintln!(
        "{kernel}: guest run took {:?} (log: {})",
        outcome.elapsed,
        outcome.log_path.display()
    );
    outcome.assert_success();
    let out = outcome.script_output();
    let expect = |needle: &str| {
        assert!(
            out.contains(needle),
            "{kernel}: missing {needle:?} in guest output:\n{out}"
        );
    };
    expect(&format!("subnqn:  {NQN}"));
    // Admin queue + one default + one write queue, each its own connection.
    expect("queues: 3");
    expect(&format!(
        "address: traddr=10.0.2.100,trsvcid={FORWARDED_PORT_IN_GUEST}"
    ));
    expect("/dev/nvme0n1");
    expect(&format!("subnqn    : {NQN}"));
    expect("nsze    : 0x4000");
    expect("3;fio-3.33;verify");
    expect("7fdd2029fc0e3a4249d59728a5063a2fd9c21cf9170efa3ec968d2b0f5c3b184  /mnt/nvme/f");
    expect(&format!("NQN:{NQN} disconnected 1 controller(s)"));
}

#[test]
fn linux_6_1_host_reaches_reference_kernel_target_through_forward() {
    reference_target_round_trip(
        GuestKernel::V6_1,
        "linux_6_1_host_reaches_reference_kernel_target_through_forward",
    );
}

#[test]
fn linux_6_12_host_reaches_reference_kernel_target_through_forward() {
    reference_target_round_trip(
        GuestKernel::V6_12,
        "linux_6_12_host_reaches_reference_kernel_target_through_forward",
    );
}
