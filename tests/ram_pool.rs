//! A pool in memory (`--device ram:SIZE`), as benchmarks use it: keeld serves
//! NVMe/TCP and REST from it like from a file, keeps no pool file and no
//! catalog on disk, and starts empty again after a restart, its management
//! catalog with it (so no volume is left naming data that is gone).

mod common;

use common::blocks::{read_back, write_blocks};
use common::{Keeld, KeeldOptions};
use reqwest::StatusCode;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:7a7a7a7a-7777-4777-8777-7a7a7a7a7a7a";

fn volume_names(k: &Keeld) -> Vec<String> {
    let a = k.get("/api/v2/projects/default/volumes");
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    a.body["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn a_memory_pool_serves_io_and_starts_empty_after_a_restart() {
    let mut k = Keeld::start(KeeldOptions {
        insecure_http: true,
        no_auth: true,
        extra_args: vec!["--device".into(), "ram:512MiB".into()],
        ..KeeldOptions::default()
    });
    assert!(k.logged("ram:512MiB"), "{}", k.log_tail());
    let volume = k.create_volume("in-memory", 64 << 20, &[HOST]);
    let nsid = volume["nsid"].as_u64().expect("nsid") as u32;
    let lbas: Vec<u64> = (0..64).map(|i| i * 97 % 16384).collect();
    let expected = write_blocks(&k, HOST, nsid, &lbas, None, true);
    assert!(read_back(&k, HOST, nsid, &expected, "memory pool").is_empty());
    assert!(!k.data_dir().join("pool.img").exists());
    let catalog = k.data_dir().join("api/catalog.json");
    assert!(
        !std::fs::read_to_string(&catalog)
            .unwrap_or_default()
            .contains("in-memory"),
        "the catalog of a memory pool stays in memory"
    );

    k.restart();
    assert_eq!(volume_names(&k), Vec::<String>::new());
    let again = k.create_volume("in-memory", 64 << 20, &[HOST]);
    let nsid = again["nsid"].as_u64().expect("nsid") as u32;
    let zeros = lbas
        .iter()
        .map(|&lba| (lba, bytes::Bytes::from(vec![0u8; 4096])))
        .collect();
    assert!(read_back(&k, HOST, nsid, &zeros, "fresh memory pool").is_empty());
}
