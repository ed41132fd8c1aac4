//! Opening backing stores: regular files (created and sized on demand) and raw
//! block devices, with O_DIRECT and an exclusive lock so two daemons never share a pool.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What kind of backing store a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKind {
    /// A regular file; created (sparse) with the requested size if missing.
    File,
    /// A raw block device such as `/dev/loop0` or `/dev/nvme0n1`.
    BlockDevice,
    /// Memory ([`super::RamDevice`]): nothing to open; the path is only its
    /// name, and the pool is new at every start.
    Memory,
}

/// Why a backing store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenBackingError {
    /// Another process holds the store's lock.
    #[error("{path} is in use by another process (is another keeld running on this pool?)")]
    Locked {
        /// The store's path.
        path: PathBuf,
    },
    /// A new file needs a size.
    #[error("{path} does not exist and no size was given to create it")]
    NoSize {
        /// The store's path.
        path: PathBuf,
    },
    /// The store is smaller than the engine can use.
    #[error("{path} is {size} bytes; too small")]
    TooSmall {
        /// The store's path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The path names neither a regular file nor a block device, or the kind differs from the one asked.
    #[error("{path} is not a {expected:?}")]
    WrongKind {
        /// The store's path.
        path: PathBuf,
        /// What was expected.
        expected: BackingKind,
    },
    /// An OS call failed.
    #[error("{op} {path}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The store's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens (creating a sparse file of `create_size` bytes if needed) a backing store
/// with O_DIRECT, takes an exclusive non-blocking flock on it, and returns it with
/// its usable size in bytes.
pub fn open_backing(
    path: &Path,
    create_size: Option<u64>,
    kind: BackingKind,
) -> Result<(File, u64), OpenBackingError> {
    let os = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| OpenBackingError::Os { op, path, source }
    };
    let exists = path.exists();
    if kind == BackingKind::Memory || !exists && kind == BackingKind::BlockDevice {
        return Err(OpenBackingError::WrongKind {
            path: path.to_path_buf(),
            expected: kind,
        });
    }
    if !exists && create_size.is_none() {
        return Err(OpenBackingError::NoSize {
            path: path.to_path_buf(),
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(kind == BackingKind::File)
        // A pool file holds every volume's data: its owner's alone.
        .mode(0o600)
        .truncate(false)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(os("open"))?;
    lock_exclusive(&file, path)?;
    let meta = file.metadata().map_err(os("stat"))?;
    let size = if meta.file_type().is_block_device() {
        if kind != BackingKind::BlockDevice {
            return Err(OpenBackingError::WrongKind {
                path: path.to_path_buf(),
                expected: kind,
            });
        }
        block_device_size(&file).map_err(os("size"))?
    } else if meta.file_type().is_file() {
        if kind != BackingKind::File {
            return Err(OpenBackingError::WrongKind {
                path: path.to_path_buf(),
                expected: kind,
            });
        }
        if meta.len() == 0 {
            if let Some(size) = create_size {
                file.set_len(size).map_err(os("size"))?;
            }
        }
        file.metadata().map_err(os("stat"))?.len()
    } else {
        return Err(OpenBackingError::WrongKind {
            path: path.to_path_buf(),
            expected: kind,
        });
    };
    Ok((file, size))
}

/// How long to keep trying a held lock: after a SIGKILL the kernel tears down
/// the dead process's io_uring asynchronously, and the file (with its lock) is
/// released only when that finishes.
const LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

fn lock_exclusive(file: &File, path: &Path) -> Result<(), OpenBackingError> {
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT_MAX => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenBackingError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OpenBackingError::Os {
                    op: "lock",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn block_device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::End(0))
}
