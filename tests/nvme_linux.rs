//! The Linux kernel NVMe/TCP host against a real keeld, in QEMU guests running
//! Debian's 6.1 and 6.12 kernels. A volume is created over REST with the guest's
//! host NQN in its ACL; inside the guest: discovery and connect-all, `nvme list`,
//! `id-ctrl` and `id-ns` (model, controller id and namespace size checked
//! against what the kernel saw), fio random write with verify, mkfs.ext4 + mount + files +
//! sha256sum, disconnect and reconnect with header and data digests and with a
//! write and a polled queue beside the default one (files still right; fio
//! verify through io_uring polling), blkdiscard, a volume created while connected appearing through the
//! asynchronous event, and a host NQN outside the ACL seeing no namespace.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::guest::{self, GuestKernel, GuestRun};

const GUEST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6b5bd1c4-keel-guest-allowed";
const NVME_PORT_IN_GUEST: u16 = 4420;
const DISCOVERY_PORT_IN_GUEST: u16 = 8009;
const SIGNAL_PORT_IN_GUEST: u16 = 7000;

/// keeld on loopback with its own data directory; killed by pid on drop.
struct Keeld {
    child: Child,
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    api: u16,
    nvme: u16,
    discovery: u16,
}

impl Keeld {
    fn start() -> Keeld {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let [api, nvme, discovery] = support::ports::unused_ports();
        let child = Command::new(env!("CARGO_BIN_EXE_keeld"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--pool-size", "2GiB"])
            .arg(format!("--api-listen=127.0.0.1:{api}"))
            .arg(format!("--nvme-listen=127.0.0.1:{nvme}"))
            .arg(format!("--discovery-listen=127.0.0.1:{discovery}"))
            // Discovery entries must name the address the guest reaches.
            .arg(format!(
                "--advertised-address={}:{NVME_PORT_IN_GUEST}",
                guest::HOST_ADDR_IN_GUEST
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("keeld.log")).expect("log file"),
            ))
            .spawn()
            .expect("start keeld");
        let keeld = Keeld {
            child,
            _dir: dir,
            data_dir,
            api,
            nvme,
            discovery,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while keeld.curl(&["/api/v2/clusterinfo"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "keeld did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        keeld
    }

    fn token(&self) -> Result<String, String> {
        let password = std::fs::read_to_string(self.data_dir.join("api/admin-password"))
            .map_err(|e| e.to_string())?;
        let out = Command::new("curl")
            .args(["-sk", "--fail-with-body", "-X", "POST", "-u"])
            .arg(format!("admin:{}", password.trim()))
            .arg(format!("https://127.0.0.1:{}/login", self.api))
            .output()
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        body["idToken"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in {body}"))
    }

    /// `curl` against the API with a fresh bearer token; extra args after the path.
    fn curl(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let token = self.token()?;
        let (path, rest) = args.split_first().ok_or("no path")?;
        let out = Command::new("curl")
            .args([
                "-sk",
                "--fail-with-body",
                "-H",
                "content-type: application/json",
                "-H",
            ])
            .arg(format!("Authorization: Bearer {token}"))
            .args(rest)
            .arg(format!("https://127.0.0.1:{}{path}", self.api))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn create_volume(&self, name: &str, size: &str, acl: &str) -> serde_json::Value {
        let body = format!(
            r#"{{"name":"{name}","size":"{size}","replicaCount":1,"acl":{{"values":["{acl}"]}}}}"#
        );
        self.curl(&[
            "/api/v2/projects/default/volumes",
            "-X",
            "POST",
            "-d",
            &body,
        ])
        .expect("create volume")
    }
}

impl Drop for Keeld {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn guest_script() -> &'static str {
    r#"
set -euo pipefail
A=$KEEL_HOST_ADDR
# Namespace nodes are named by subsystem instance, which depends on what else is
# connected (a discovery controller, an earlier connection): look them up.
ns_node() { ls /dev/nvme[0-9]*n"$1" 2>/dev/null | head -1; }
wait_ns() { for _ in $(seq 1 200); do n=$(ns_node "$1"); [ -n "$n" ] && { echo "$n"; return 0; }; sleep 0.1; done; echo "timeout waiting for namespace $1" >&2; return 1; }
wait_no_ns() { for _ in $(seq 1 200); do [ -z "$(ns_node 1)" ] && return 0; sleep 0.1; done; echo "namespace still present" >&2; return 1; }

echo "== discover"
nvme discover -t tcp -a $A -s 8009 | tee /tmp/disc
grep -q "$SUBNQN" /tmp/disc
grep -q "trsvcid: 4420" /tmp/disc

echo "== connect-all through discovery"
nvme connect-all -t tcp -a $A -s 8009
DEV=$(wait_ns 1)
CTRL=/dev/$(basename $(ls -d /sys/class/nvme/nvme*/ | head -1))
for c in /sys/class/nvme/nvme*; do grep -q "$SUBNQN" $c/subsysnqn && CTRL=/dev/$(basename $c); done
echo "namespace $DEV controller $CTRL"
nvme list | tee /tmp/list
grep "$DEV " /tmp/list | grep -q Keel
nvme id-ctrl $CTRL | tee /tmp/idctrl
grep -q "subnqn *: $SUBNQN" /tmp/idctrl
grep -q "^mn *: Keel" /tmp/idctrl
# The controller Identify names is the one Connect returned.
[ $(( $(awk '/^cntlid/ {print $3}' /tmp/idctrl) )) -eq $(cat /sys/class/nvme/$(basename $CTRL)/cntlid) ]
# NSZE blocks of the LBA format in use make the volume's 256 MiB, as the
# kernel sized the disk.
nvme id-ns $DEV | tee /tmp/idns
NSZE=$(awk '/^nsze/ {print $3}' /tmp/idns)
LBADS=$(grep "(in use)" /tmp/idns | sed 's/.*lbads:\([0-9]*\).*/\1/')
[ $(( NSZE << LBADS )) -eq 268435456 ]
[ $(( $(cat /sys/block/$(basename $DEV)/size) * 512 )) -eq 268435456 ]
nvme ns-descs $DEV | tee /tmp/descs
grep -qi "uuid *: *$VOLUUID" /tmp/descs

echo "== fio random write with verify"
fio --name=verify --filename=$DEV --rw=randwrite --bs=4k --size=8M --ioengine=libaio --direct=1 \
    --iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=terse >/tmp/fio.out
echo "fio ok"

echo "== ext4"
mkfs.ext4 -q -F $DEV
mkdir -p /mnt/k
mount $DEV /mnt/k
for i in 1 2 3; do dd if=/dev/urandom of=/mnt/k/file$i bs=64k count=$((i * 8)) status=none; done
(cd /mnt/k && sha256sum file1 file2 file3 > /tmp/sums)
umount /mnt/k
nvme disconnect -n "$SUBNQN"
wait_no_ns

echo "== reconnect with header and data digests, and write and poll queues"
# Besides the default queue (one per CPU, one here), a write queue and a
# polled queue: a controller with three I/O queues, spread over the reactors.
nvme connect -t tcp -a $A -s 4420 -n "$SUBNQN" --hdr-digest --data-digest \
    --nr-write-queues=1 --nr-poll-queues=1
DEV=$(wait_ns 1)
for c in /sys/class/nvme/nvme*; do grep -q "$SUBNQN" $c/subsysnqn && CTRL=$c; done
echo "queues: $(cat $CTRL/queue_count)"
[ "$(cat $CTRL/queue_count)" -eq 4 ]
mount $DEV /mnt/k
(cd /mnt/k && sha256sum -c /tmp/sums)
umount /mnt/k
fio --name=polled --filename=$DEV --rw=randwrite --bs=4k --size=4M --ioengine=io_uring --hipri \
    --direct=1 --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=terse >/tmp/fio.out
echo "polled fio ok"

echo "== a volume created while connected appears"
exec 3<>/dev/tcp/$A/7000
echo "create-second-volume" >&3
read -r reply <&3
[ "$reply" = "created" ]
DEV2=$(wait_ns 2)
echo "second namespace $DEV2"
nvme list

echo "== blkdiscard"
blkdiscard $DEV
dd if=$DEV bs=1M count=1 status=none | cmp - <(dd if=/dev/zero bs=1M count=1 status=none)
nvme disconnect -n "$SUBNQN"
wait_no_ns

echo "== a host outside the ACL sees no namespace"
nvme connect -t tcp -a $A -s 4420 -n "$SUBNQN" --hostnqn=nqn.2014-08.org.nvmexpress:uuid:not-allowed
for _ in $(seq 1 50); do ls /sys/class/nvme/ | grep -q nvme && break; sleep 0.1; done
sleep 2
if [ -n "$(ns_node 1)" ]; then echo "unexpected namespace $(ns_node 1)"; exit 1; fi
nvme disconnect -n "$SUBNQN"
echo "ALL-CHECKS-PASSED"
"#
}

fn run(kernel: GuestKernel) {
    let images = match guest::prepared() {
        Ok(images) => images,
        Err(reason) => return guest::skip_or_fail("nvme_linux", &reason),
    };
    let keeld = Keeld::start();
    let info = keeld.curl(&["/api/v2/clusterinfo"]).expect("clusterinfo");
    let subnqn = info["subsystemNQN"]
        .as_str()
        .expect("subsystemNQN")
        .to_owned();
    let volume = keeld.create_volume("linux-host", "268435456", GUEST_NQN);
    let uuid = volume["UUID"].as_str().expect("UUID").to_owned();

    let listener = TcpListener::bind("127.0.0.1:0").expect("signal listener");
    let signal_port = listener.local_addr().expect("addr").port();
    let outcome = std::thread::scope(|scope| {
        let keeld_ref = &keeld;
        scope.spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() && line.trim() == "create-second-volume" {
                keeld_ref.create_volume("appears-live", "134217728", GUEST_NQN);
                let mut stream = stream;
                let _ = stream.write_all(b"created\n");
            }
        });
        let outcome = GuestRun::new(kernel, guest_script())
            .name("nvme_linux")
            .hostnqn(GUEST_NQN)
            .forward(NVME_PORT_IN_GUEST, keeld.nvme)
            .forward(DISCOVERY_PORT_IN_GUEST, keeld.discovery)
            .forward(SIGNAL_PORT_IN_GUEST, signal_port)
            .env("SUBNQN", &subnqn)
            .env("VOLUUID", &uuid)
            .timeout(Duration::from_secs(400))
            .run(&images);
        if outcome.exit_code != Some(0) {
            // Unblock the signal thread if the guest never got that far.
            let _ = std::net::TcpStream::connect(("127.0.0.1", signal_port));
        }
        outcome
    });
    if outcome.exit_code != Some(0) {
        let log = std::fs::read_to_string(keeld._dir.path().join("keeld.log")).unwrap_or_default();
        eprintln!("--- keeld log ---\n{}", tail(&log, 80));
    }
    outcome.assert_success();
    assert!(outcome.script_output().contains("ALL-CHECKS-PASSED"));
    eprintln!("{kernel:?}: guest run took {:?}", outcome.elapsed);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn linux_6_1_host_uses_keel_volumes() {
    run(GuestKernel::V6_1);
}

#[test]
fn linux_6_12_host_uses_keel_volumes() {
    run(GuestKernel::V6_12);
}
