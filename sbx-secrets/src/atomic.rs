//! Private files written atomically: a temporary file in the same directory (mode 0600),
//! fsync, rename over the target, fsync of the directory. Readers see the old or the new
//! content, never a mix; a crash leaves at most a stray `.tmp` file.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the directory (and parents) with mode 0700 where it creates them.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create directory", dir))
}

/// Replaces `path` with `data` atomically; the file is mode 0600.
pub(crate) fn write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp: PathBuf = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        crate::sentinel::random_alnum(8)?
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("cannot create", &tmp))?;
        f.write_all(data).map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("cannot replace", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a file, or `None` if it does not exist. Tightens group/other permission bits if
/// someone loosened them.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => {
            if let Ok(meta) = fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "secret file was readable by others; setting mode 0600");
                    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
                }
            }
            Ok(Some(data))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("cannot read", path)(e)),
    }
}

/// An exclusive advisory lock on `<path>.lock`, held until dropped, so two processes
/// updating the same file do not lose each other's changes.
pub(crate) struct Lock(#[allow(dead_code)] File);

pub(crate) fn lock(path: &Path) -> Result<Lock> {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    let lock_path = PathBuf::from(p);
    if let Some(dir) = lock_path.parent() {
        private_dir(dir)?;
    }
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io("cannot open lock", &lock_path))?;
    f.lock().map_err(io("cannot lock", &lock_path))?;
    Ok(Lock(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_private_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(read(&p).unwrap().unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .collect();
        assert!(leftovers.is_empty());
        assert!(read(&dir.path().join("none")).unwrap().is_none());
        let _l = lock(&p).unwrap();
    }
}
