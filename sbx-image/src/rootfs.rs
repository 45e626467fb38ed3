//! Building the Debian root filesystem: `mmdebstrap` into a directory with a customize hook
//! that adds the user and the host files, then `mkfs.ext4 -d` for the microVM backend.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::apt;
use crate::error::{Error, Result};
use crate::manifest::{self, ImageKind, Manifest, PackageVersion};
use crate::recipe::{cache_key, shell_quote, RootfsRecipe, FORMAT};
use crate::steps::{Ctx, Progress, BUILD_LOG};
use crate::store::{Image, Store};
use crate::BuildOptions;

const MIB: u64 = 1 << 20;

/// The customize hook: `sh hook.sh <root>`, run by mmdebstrap after the packages are in.
fn hook_script(r: &RootfsRecipe) -> String {
    let user = shell_quote(&r.user);
    let host = shell_quote(&r.hostname);
    let tz = shell_quote(&r.timezone);
    let mut s = format!(
        r#"set -eu
root="$1"
chroot "$root" useradd --create-home --uid 1000 --user-group --shell /bin/bash {user}
mkdir -p "$root/etc/sudoers.d"
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' {user} > "$root/etc/sudoers.d/90-sbx-user"
chmod 0440 "$root/etc/sudoers.d/90-sbx-user"
printf '%s\n' {host} > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' {host} > "$root/etc/hosts"
printf 'LANG=%s\n' {locale} > "$root/etc/default/locale"
printf '%s\n' {tz} > "$root/etc/timezone"
test -e "$root/usr/share/zoneinfo/"{tz} || {{ echo "no zoneinfo for "{tz}" (is tzdata in the packages?)" >&2; exit 1; }}
ln -sf "/usr/share/zoneinfo/"{tz} "$root/etc/localtime"
"#,
        locale = shell_quote(&r.locale),
    );
    for cmd in &r.run {
        s.push_str(&format!(
            "chroot \"$root\" /bin/sh -c {}\n",
            shell_quote(cmd)
        ));
    }
    s
}

fn mmdebstrap_command(r: &RootfsRecipe, hook: &Path, target: &Path) -> Command {
    // As root mmdebstrap mounts proc, sys and dev inside the target. In a mount namespace of
    // its own those mounts end with it, even when it is killed; otherwise they would stay on
    // the host (with the host's /dev/shm bound inside the build directory).
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "mmdebstrap"]);
        c
    } else {
        Command::new("mmdebstrap")
    };
    c.arg(format!("--variant={}", r.variant))
        .arg("--mode=auto")
        .arg("--format=directory")
        .arg("--aptopt=Acquire::Languages \"none\"")
        // No fsync per file: the tree is in a temporary directory until it is complete, and a
        // crash only leaves a `.build-*` directory to delete. (Stays set inside the image,
        // where a disposable sandbox gains the same speed.)
        .arg("--dpkgopt=force-unsafe-io");
    if !r.packages.is_empty() {
        c.arg(format!("--include={}", r.packages.join(",")));
    }
    if r.exclude_docs {
        for p in [
            "path-exclude=/usr/share/man/*",
            "path-exclude=/usr/share/info/*",
            "path-exclude=/usr/share/locale/*",
            "path-include=/usr/share/locale/locale.alias",
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
        ] {
            c.arg(format!("--dpkgopt={p}"));
        }
    }
    c.arg(format!(
        "--customize-hook=sh {} \"$1\"",
        shell_quote(&hook.to_string_lossy())
    ))
    .arg(&r.suite)
    .arg(target);
    c
}

fn installed_packages(ctx: &mut Ctx<'_>, root: &Path) -> Result<Vec<PackageVersion>> {
    let text = ctx.output(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f=${Package}\t${Version}\n"]),
    )?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| PackageVersion {
            name: n.to_owned(),
            version: v.to_owned(),
        })
        .collect())
}

/// Image size for a tree: a quarter more than it uses plus 256 MiB of room, in whole MiB.
fn ext4_size(tree_bytes: u64) -> u64 {
    (tree_bytes + tree_bytes / 4 + 256 * MIB).div_ceil(MIB) * MIB
}

fn make_ext4(ctx: &mut Ctx<'_>, root: &Path, image: &Path, bytes: u64, entries: u64) -> Result<()> {
    let f = File::create(image).map_err(Error::io("create the ext4 image", image))?;
    f.set_len(ext4_size(bytes))
        .map_err(Error::io("size the ext4 image", image))?;
    drop(f);
    let inodes = entries + entries / 2 + 8192;
    ctx.run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-L",
                "sbx-root",
                "-E",
                "root_owner=0:0",
            ])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-d")
            .arg(root)
            .arg(image),
    )
}

impl Store {
    /// Builds (or finds in the cache) the root filesystem of `recipe` and makes it current.
    ///
    /// Needs `mmdebstrap` (and `mkfs.ext4` for [`RootfsRecipe::ext4`]); run as root. Takes a
    /// minute or more. On failure the current image is untouched and the error names the
    /// step and the build log.
    pub fn build_rootfs(
        &self,
        recipe: &RootfsRecipe,
        opts: &BuildOptions,
        progress: Progress<'_>,
    ) -> Result<Image> {
        let started = Instant::now();
        let _lock = self.lock()?;
        let log = self.log_path(ImageKind::Rootfs, &recipe.name);
        let total = if recipe.ext4 { 6 } else { 5 };
        let mut ctx = Ctx::new(&log, total, progress)?;
        ctx.step("resolve package versions");
        let versions = apt::versions(&mut ctx, &recipe.packages)?;
        let resolved: Vec<(String, String)> = versions
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        let key = cache_key("rootfs", recipe, &resolved);
        let dest = self.image_dir(ImageKind::Rootfs, &key);
        if !opts.force && dest.join(manifest::MANIFEST).exists() {
            ctx.note(&format!("up to date: {}", dest.display()));
            self.set_current(ImageKind::Rootfs, &recipe.name, &dest)?;
            return self.open(&dest);
        }
        let tmp = self.temp_dir(ImageKind::Rootfs, &key)?;
        let res = self.build_rootfs_in(&mut ctx, recipe, &tmp, &key, started);
        match res {
            Ok(()) => {
                ctx.step("install the image");
                ctx.copy_log(&tmp.join(BUILD_LOG))?;
                self.install(&tmp, ImageKind::Rootfs, &recipe.name, &key)
            }
            Err(e) => {
                let _ = crate::store::remove_tree(&tmp);
                Err(ctx.wrap(e))
            }
        }
    }

    fn build_rootfs_in(
        &self,
        ctx: &mut Ctx<'_>,
        recipe: &RootfsRecipe,
        tmp: &Path,
        key: &str,
        started: Instant,
    ) -> Result<()> {
        ctx.step("install packages (mmdebstrap)");
        let hook = tmp.join("customize.sh");
        std::fs::write(&hook, hook_script(recipe))
            .map_err(Error::io("write the customize hook", &hook))?;
        let root = tmp.join("rootfs");
        ctx.run(&mut mmdebstrap_command(recipe, &hook, &root))?;
        let _ = std::fs::remove_file(&hook);

        ctx.step("record package versions");
        let packages = installed_packages(ctx, &root)?;
        if packages.is_empty() {
            return Err(ctx.fail("no packages recorded in the new root"));
        }
        let tree = manifest::tree_size(&root)?;
        ctx.note(&format!(
            "rootfs: {} bytes in {} entries",
            tree.bytes, tree.entries
        ));

        let mut files = Vec::new();
        if recipe.ext4 {
            ctx.step("make the ext4 image (mkfs.ext4 -d)");
            make_ext4(
                ctx,
                &root,
                &tmp.join("rootfs.ext4"),
                tree.bytes,
                tree.entries,
            )?;
        }
        ctx.step("checksums and manifest");
        if recipe.ext4 {
            files.push(manifest::file_entry(tmp, "rootfs.ext4")?);
        }
        let m = Manifest {
            format: FORMAT,
            kind: ImageKind::Rootfs,
            name: recipe.name.clone(),
            key: key.to_owned(),
            recipe: serde_json::to_value(recipe).unwrap_or_default(),
            created_unix: now_unix(),
            build_seconds: started.elapsed().as_secs_f64(),
            packages,
            files,
            tree: Some(tree),
            kernel_release: None,
            modules: None,
            log: self.image_dir(ImageKind::Rootfs, key).join(BUILD_LOG),
        };
        m.write(tmp)
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_sets_up_user_and_host_files() {
        let r = RootfsRecipe::default().with_run("echo 'hi there' > /etc/motd");
        let s = hook_script(&r);
        assert!(
            s.contains("useradd --create-home --uid 1000 --user-group --shell /bin/bash 'agent'")
        );
        assert!(s.contains("NOPASSWD: ALL"));
        assert!(s.contains("chmod 0440"));
        assert!(s.contains("127.0.1.1"));
        assert!(s.contains("'Etc/UTC'"));
        assert!(s.contains(r#"chroot "$root" /bin/sh -c 'echo '\''hi there'\'' > /etc/motd'"#));
    }

    #[test]
    fn the_hook_is_valid_shell() {
        let dir = std::env::temp_dir().join(format!("sbx-image-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("h.sh");
        std::fs::write(
            &p,
            hook_script(&RootfsRecipe::default().with_run("a 'b' \"c\"")),
        )
        .unwrap();
        let st = Command::new("sh").arg("-n").arg(&p).status().unwrap();
        assert!(st.success());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mmdebstrap_arguments() {
        let r = RootfsRecipe::default();
        let c = mmdebstrap_command(&r, Path::new("/b/hook.sh"), Path::new("/b/rootfs"));
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--variant=minbase".to_owned()));
        assert!(args
            .iter()
            .any(|a| a.starts_with("--include=bash,coreutils,git")));
        assert!(args.contains(&"--customize-hook=sh '/b/hook.sh' \"$1\"".to_owned()));
        assert_eq!(&args[args.len() - 2..], ["bookworm", "/b/rootfs"]);
    }

    #[test]
    fn ext4_sizes() {
        assert_eq!(ext4_size(0), 256 * MIB);
        assert_eq!(ext4_size(400 * MIB), 756 * MIB);
        assert_eq!(ext4_size(1) % MIB, 0);
    }
}
