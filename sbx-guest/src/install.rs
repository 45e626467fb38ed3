//! Putting the agent into a sandbox root that has no (or another) libc.
//!
//! The agent executable (by default the running binary, which may be any program that calls
//! [`crate::run_if_agent`]) is copied to `<root>/.sbx/sbx-guest`. A dynamically linked binary
//! also gets its ELF interpreter and shared libraries (as `ldd` resolves them on the host) in
//! `<root>/.sbx/lib/`, and is started through that interpreter, so nothing from the image's own
//! `/lib` is used. A statically linked binary is copied alone.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::AGENT_NAME;
use crate::error::{Error, Result};

/// The directory inside the root that holds the agent.
pub const INSTALL_DIR: &str = "/.sbx";

/// An agent installed into a root: how to start it from inside that root.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstalledAgent {
    /// The argv prefix, paths as seen inside the root, e.g.
    /// `["/.sbx/lib/ld-linux-x86-64.so.2", "--library-path", "/.sbx/lib", "/.sbx/sbx-guest"]`,
    /// or `["/.sbx/sbx-guest"]` for a static binary.
    pub argv: Vec<OsString>,
}

impl InstalledAgent {
    /// The full argv: the prefix followed by agent flags.
    pub fn command<I, S>(&self, agent_args: I) -> Vec<OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut v = self.argv.clone();
        v.extend(agent_args.into_iter().map(|s| s.as_ref().to_owned()));
        v
    }
}

/// What `ldd` said about an executable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Deps {
    interpreter: Option<PathBuf>,
    libs: Vec<(String, PathBuf)>,
}

pub(crate) fn parse_ldd(text: &str) -> std::result::Result<Deps, String> {
    let mut deps = Deps {
        interpreter: None,
        libs: Vec::new(),
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        if line.contains("not a dynamic executable") {
            return Ok(Deps {
                interpreter: None,
                libs: Vec::new(),
            });
        }
        let line = match line.rfind(" (0x") {
            Some(i) => &line[..i],
            None => line,
        };
        if let Some((name, path)) = line.split_once("=>") {
            let (name, path) = (name.trim(), path.trim());
            if path == "not found" {
                return Err(format!("{name} not found"));
            }
            if path.is_empty() {
                continue;
            }
            deps.libs.push((name.to_owned(), PathBuf::from(path)));
        } else if line.starts_with('/') {
            deps.interpreter = Some(PathBuf::from(line));
        }
        // Anything else is the vDSO (`linux-vdso.so.1`), which has no file.
    }
    Ok(deps)
}

fn copy_exe(from: &Path, to: &Path) -> io::Result<()> {
    // Copy under a temporary name and rename, so a running older copy is never overwritten.
    let tmp = to.with_extension(format!("tmp{}", std::process::id()));
    std::fs::copy(from, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, to)
}

/// Installs an agent executable into `root` (see the module docs). `exe` defaults to the
/// running binary (`/proc/self/exe`), which must then call [`crate::run_if_agent`] first.
pub fn install_agent(root: &Path, exe: Option<&Path>) -> Result<InstalledAgent> {
    install_agent_dir(
        &root.join(INSTALL_DIR.trim_start_matches('/')),
        Path::new(INSTALL_DIR),
        exe,
    )
}

/// Installs the agent into `dir` on the host, to appear at `dir_in_root` inside the sandbox
/// (for a launcher that bind-mounts `dir` read-only rather than writing into the image).
pub fn install_agent_dir(
    dir: &Path,
    dir_in_root: &Path,
    exe: Option<&Path>,
) -> Result<InstalledAgent> {
    let exe = match exe {
        Some(p) => p.to_owned(),
        None => std::env::current_exe().map_err(Error::io("resolve the running executable"))?,
    };
    let lib_err = |reason: String| Error::Libraries {
        path: exe.clone(),
        reason,
    };
    if !dir_in_root.is_absolute() {
        return Err(lib_err("the directory in the root must be absolute".into()));
    }
    let out = Command::new("ldd")
        .arg(&exe)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| lib_err(format!("running ldd: {e}")))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let deps = parse_ldd(&text).map_err(lib_err)?;
    if !out.status.success() && deps.interpreter.is_some() {
        return Err(lib_err(format!("ldd failed: {}", text.trim())));
    }
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).map_err(Error::io("create the agent directory"))?;
    copy_exe(&exe, &dir.join(AGENT_NAME)).map_err(Error::io("copy the agent"))?;
    let agent_in_root = dir_in_root.join(AGENT_NAME).into_os_string();
    let Some(interp) = deps.interpreter else {
        tracing::debug!(exe = %exe.display(), "installed static agent");
        return Ok(InstalledAgent {
            argv: vec![agent_in_root],
        });
    };
    for (name, path) in &deps.libs {
        copy_exe(path, &lib.join(name)).map_err(Error::io("copy a shared library"))?;
    }
    let interp_name = interp
        .file_name()
        .ok_or_else(|| lib_err("interpreter has no file name".into()))?
        .to_owned();
    copy_exe(&interp, &lib.join(&interp_name)).map_err(Error::io("copy the ELF interpreter"))?;
    let lib_in_root = dir_in_root.join("lib");
    let interp_in_root = lib_in_root.join(&interp_name).into_os_string();
    tracing::debug!(exe = %exe.display(), libs = deps.libs.len(), "installed dynamic agent");
    Ok(InstalledAgent {
        argv: vec![
            interp_in_root,
            "--library-path".into(),
            lib_in_root.into_os_string(),
            agent_in_root,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_dynamic() {
        let t = "\tlinux-vdso.so.1 (0x00007ffc3b5e5000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c5a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c3bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c5e0000)
";
        let d = parse_ldd(t).unwrap();
        assert_eq!(
            d.interpreter,
            Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2"))
        );
        assert_eq!(d.libs.len(), 2);
        assert_eq!(d.libs[1].0, "libc.so.6");
    }

    #[test]
    fn ldd_static_and_missing() {
        assert_eq!(
            parse_ldd("\tnot a dynamic executable\n").unwrap(),
            Deps {
                interpreter: None,
                libs: vec![]
            }
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap().interpreter,
            None
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn installs_this_test_binary_with_its_libraries() {
        let root = std::env::temp_dir().join(format!("sbx-guest-install-{}", std::process::id()));
        let a = install_agent(&root, None).unwrap();
        let first = PathBuf::from(&a.argv[0]);
        assert!(root.join(first.strip_prefix("/").unwrap()).is_file());
        assert!(root.join(".sbx/sbx-guest").is_file());
        if a.argv.len() > 1 {
            assert!(root.join(".sbx/lib/libc.so.6").is_file());
            assert_eq!(a.argv[3], OsString::from("/.sbx/sbx-guest"));
        }
        assert_eq!(a.command(["--x"]).last().unwrap(), "--x");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn static_executable_is_copied_alone() {
        // busybox-static is statically linked; the integration tests need it anyway.
        let dir = std::env::temp_dir().join(format!("sbx-guest-static-{}", std::process::id()));
        let a = install_agent_dir(
            &dir,
            Path::new("/opt/agent"),
            Some(Path::new("/bin/busybox")),
        )
        .unwrap();
        assert_eq!(a.argv, vec![OsString::from("/opt/agent/sbx-guest")]);
        assert!(dir.join("sbx-guest").is_file());
        assert!(std::fs::read_dir(dir.join("lib")).unwrap().next().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
