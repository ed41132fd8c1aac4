//! The data directory holds every volume's data and the API's secrets: the real
//! keeld makes it and everything in it private to its user, and tightens what
//! an older build left readable when it starts.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::Keeld;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Every directory and file in the data directory, the directory first.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut next = 0;
    while next < found.len() {
        let path = found[next].clone();
        next += 1;
        if path.is_dir() {
            for entry in fs::read_dir(&path).expect("read dir") {
                found.push(entry.expect("entry").path());
            }
        }
    }
    found
}

/// Every directory is 0700 and every file 0600; the files that matter exist.
fn assert_private(dir: &Path) {
    let all = entries(dir);
    for name in [
        "pool.img",
        "node-id",
        "api/catalog.json",
        "api/users.json",
        "api/token-secret",
        "api/admin-password",
        "api/tls-key.pem",
        "api/tls-cert.pem",
    ] {
        assert!(all.contains(&dir.join(name)), "{name} missing: {all:?}");
    }
    for path in all {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&path),
            expected,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
}

#[test]
fn the_data_dir_and_every_file_in_it_are_private_and_an_older_layout_is_tightened() {
    let mut k = Keeld::start_default();
    let dir = k.data_dir().to_path_buf();
    assert_private(&dir);

    // What a build that created them with the default umask left behind.
    k.terminate();
    set_mode(&dir, 0o755);
    set_mode(&dir.join("api"), 0o755);
    for name in ["pool.img", "node-id", "api/catalog.json", "api/tls-key.pem"] {
        set_mode(&dir.join(name), 0o644);
    }
    k.restart();
    assert_private(&dir);
    assert!(
        k.logged("tightened the permissions of a data directory entry"),
        "no INFO line for a tightened file\n{}",
        k.log_tail()
    );
}
