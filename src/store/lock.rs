//! The monitor lock: one monitoring process per database.

use super::*;

/// The right to monitor a database: held by `mxwatch run` (daemon or
/// `--once`) for as long as it runs. The detector's memory and the cached
/// heads of the runs live in that process; a second monitor on the same
/// file would interleave its runs with the first one's. An advisory lock
/// on a file beside the database (`mxwatch.db.lock`); the kernel drops it
/// when the process dies, even by `kill -9`, so there is nothing stale to
/// clean up. A separate file, because closing any descriptor of the
/// database itself would drop SQLite's own POSIX locks.
#[derive(Debug)]
pub struct MonitorLock {
    _file: std::fs::File,
}

impl MonitorLock {
    pub fn acquire(db: &Path) -> Result<MonitorLock, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        if let Some(dir) = db.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let io = |source| StoreError::Lock {
            path: db.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(MonitorLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
                path: db.to_path_buf(),
                lock,
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}
