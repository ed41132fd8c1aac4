//! The data directory's permissions. It holds every volume's data (`pool.img`)
//! and the API's secrets (token key, admin password, TLS key, catalog), so only
//! keeld's own user may read or enter it: the directory and every directory
//! below it are 0700, every file 0600 at most.
//!
//! Everything keeld creates there is created that way; [`prepare`] also
//! tightens what older builds left (a 0755 directory, a 0644 pool) at start-up,
//! logging each change at INFO.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file keeld creates in the data directory.
pub const FILE_MODE: u32 = 0o600;
/// How deep below the data directory [`prepare`] looks (keeld writes two levels).
const DEPTH_MAX: usize = 4;

/// Creates `dir` (0700) if it is missing, then takes every permission of group
/// and others away from it and from every directory and regular file below it.
/// Symbolic links are neither followed nor changed.
pub fn prepare(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir, 0)
}

fn tighten(path: &Path, depth: usize) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    if !(kind.is_dir() || kind.is_file()) {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    // Owner bits stay as they are; group and other bits (and set-id bits) go.
    let tight = mode & 0o700;
    if tight != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(tight))?;
        tracing::info!(
            path = %path.display(),
            before = format!("{mode:o}"),
            after = format!("{tight:o}"),
            "tightened the permissions of a data directory entry"
        );
    }
    if kind.is_dir() && depth < DEPTH_MAX {
        for entry in fs::read_dir(path)? {
            tighten(&entry?.path(), depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_the_directory_private_and_tightens_what_is_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);

        let api = dir.join("api");
        fs::create_dir(&api).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&api, fs::Permissions::from_mode(0o775)).unwrap();
        for (name, m) in [("pool.img", 0o644), ("node-id", 0o666), ("ro", 0o444)] {
            fs::write(dir.join(name), b"x").unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(m)).unwrap();
        }
        fs::write(api.join("catalog.json"), b"{}").unwrap();
        fs::set_permissions(api.join("catalog.json"), fs::Permissions::from_mode(0o640)).unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&api), 0o700);
        assert_eq!(mode(&dir.join("pool.img")), 0o600);
        assert_eq!(mode(&dir.join("node-id")), 0o600);
        assert_eq!(mode(&dir.join("ro")), 0o400);
        assert_eq!(mode(&api.join("catalog.json")), 0o600);
        assert_eq!(
            mode(&outside),
            0o644,
            "a link's target is not ours to change"
        );
    }
}
