//! Building the microVM boot files: Debian's cloud kernel, and a `newc` initramfs with the
//! guest agent as `/init`, a static busybox and the virtio modules with their dependencies.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::apt;
use crate::cpio::CpioWriter;
use crate::elf;
use crate::error::{Error, Result};
use crate::manifest::{self, ImageKind, Manifest, PackageVersion};
use crate::modules::ModuleSet;
use crate::recipe::{cache_key, KernelRecipe, FORMAT};
use crate::rootfs::now_unix;
use crate::steps::{Ctx, Progress, BUILD_LOG};
use crate::store::{Image, Store};
use crate::BuildOptions;

/// Where the agent's shared libraries go in the initramfs (the glibc default search path).
fn lib_dir() -> String {
    format!("lib/{}-linux-gnu", std::env::consts::ARCH)
}

#[derive(Debug)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
    CharDev(u32, u32, u32),
}

/// The initramfs tree before it is written: paths without a leading `/`.
#[derive(Debug, Default)]
struct Tree(BTreeMap<String, Node>);

impl Tree {
    fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .take(path.split('/').count().saturating_sub(1))
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.0.entry(parent.clone()).or_insert(Node::Dir(0o755));
        }
        self.0.insert(path.to_owned(), node);
    }

    fn add_file(&mut self, path: &str, perm: u32, from: &Path) -> Result<()> {
        let data = std::fs::read(from).map_err(Error::io("read a file for the initramfs", from))?;
        self.add(path, Node::File(perm, data));
        Ok(())
    }

    /// Sorted order puts every directory before what it holds.
    fn write(&self, out: &Path) -> Result<()> {
        let io = Error::io("write the initramfs", out);
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(out)?;
            let mut w = CpioWriter::new(BufWriter::new(f));
            for (path, node) in &self.0 {
                match node {
                    Node::Dir(perm) => w.dir(path, *perm)?,
                    Node::File(perm, data) => w.file(path, *perm, data)?,
                    Node::Symlink(target) => w.symlink(path, target)?,
                    Node::CharDev(perm, major, minor) => {
                        w.char_device(path, *perm, *major, *minor)?
                    }
                }
            }
            w.finish()?
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()
        };
        write().map_err(io)
    }
}

fn find_vmlinuz(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    for e in
        std::fs::read_dir(&boot).map_err(Error::io("read the kernel package's /boot", &boot))?
    {
        let e = e.map_err(Error::io("read the kernel package's /boot", &boot))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((e.path(), release.to_owned()));
        }
    }
    Err(Error::format(
        boot.display().to_string(),
        "no vmlinuz-* in the kernel package",
    ))
}

/// The agent and what it needs to run as `/init`: its libraries in the default search path
/// and its ELF interpreter where `PT_INTERP` points.
fn add_agent(
    ctx: &mut Ctx<'_>,
    tree: &mut Tree,
    agent: &Path,
    stage: &Path,
    strip: bool,
) -> Result<()> {
    sbx_guest::install_agent(stage, Some(agent)).map_err(Error::Agent)?;
    let staged = stage.join(".sbx/sbx-guest");
    let init = stage.join("init");
    if strip {
        ctx.run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&init)
                .arg(&staged),
        )?;
    } else {
        std::fs::copy(&staged, &init).map_err(Error::io("copy the agent", &init))?;
    }
    let bytes = std::fs::read(&init).map_err(Error::io("read the agent", &init))?;
    let interp = elf::interpreter("the guest agent", &bytes)?;
    tree.add("init", Node::File(0o755, bytes));
    let Some(interp) = interp else {
        ctx.note("static agent: no libraries");
        return Ok(());
    };
    let libdir = lib_dir();
    let libs = stage.join(".sbx/lib");
    for e in std::fs::read_dir(&libs).map_err(Error::io("read the agent's libraries", &libs))? {
        let e = e.map_err(Error::io("read the agent's libraries", &libs))?;
        let name = e.file_name().to_string_lossy().into_owned();
        tree.add_file(&format!("{libdir}/{name}"), 0o755, &e.path())?;
        ctx.note(&format!("library {name}"));
    }
    let interp_name = interp.rsplit('/').next().unwrap_or_default();
    if !libs.join(interp_name).exists() {
        return Err(ctx.fail(format!("the agent's interpreter {interp} was not copied")));
    }
    let in_libdir = format!("/{libdir}/{interp_name}");
    if interp.starts_with("/lib64/") {
        // One directory for everything, found through PT_INTERP and both default paths.
        tree.add("lib64", Node::Symlink(libdir.clone()));
    } else if interp != in_libdir {
        tree.add(&interp, Node::Symlink(in_libdir));
    }
    Ok(())
}

fn add_busybox(ctx: &mut Ctx<'_>, tree: &mut Tree, bb_root: &Path) -> Result<()> {
    let bb = bb_root.join("bin/busybox");
    let bytes = std::fs::read(&bb).map_err(Error::io("read busybox", &bb))?;
    if elf::interpreter("busybox", &bytes)?.is_some() {
        return Err(ctx.fail("busybox is dynamically linked; use busybox-static"));
    }
    tree.add("bin/busybox", Node::File(0o755, bytes));
    let list = ctx.output(Command::new(&bb).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if !tree.0.contains_key(applet) && applet != "init" && applet != "linuxrc" {
            tree.add(applet, Node::Symlink("/bin/busybox".into()));
        }
    }
    Ok(())
}

fn base_tree() -> Tree {
    let mut t = Tree::default();
    for d in [
        "dev", "proc", "sys", "run", "tmp", "root", "etc", "mnt", "newroot",
    ] {
        t.add(d, Node::Dir(if d == "tmp" { 0o1777 } else { 0o755 }));
    }
    t.add("dev/console", Node::CharDev(0o600, 5, 1));
    t.add("dev/null", Node::CharDev(0o666, 1, 3));
    t.add(
        "etc/passwd",
        Node::File(0o644, b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
    );
    t.add("etc/group", Node::File(0o644, b"root:x:0:\n".to_vec()));
    t
}

impl Store {
    /// Builds (or finds in the cache) the kernel and initramfs of `recipe` around the agent
    /// executable `agent` (a binary that runs the sbx guest agent when started as `/init`, such
    /// as `sbx-guest`), and makes it current.
    ///
    /// Needs `apt-get`, `dpkg-deb` and (with [`KernelRecipe::strip_agent`]) `strip`.
    pub fn build_kernel(
        &self,
        recipe: &KernelRecipe,
        agent: &Path,
        opts: &BuildOptions,
        progress: Progress<'_>,
    ) -> Result<Image> {
        let started = Instant::now();
        let _lock = self.lock()?;
        let mut ctx = Ctx::new(&self.log_path(ImageKind::Kernel, &recipe.name), 6, progress)?;
        ctx.step("resolve package versions");
        let kernel_pkg = apt::resolve_kernel_package(&mut ctx, &recipe.kernel_package)?;
        let packages = apt::versions(
            &mut ctx,
            &[kernel_pkg.clone(), recipe.busybox_package.clone()],
        )?;
        if !agent.is_file() {
            return Err(Error::Missing {
                what: "guest agent executable",
                path: agent.to_owned(),
            });
        }
        let agent_sum = manifest::file_entry(
            agent.parent().unwrap_or(Path::new("/")),
            &agent.file_name().unwrap_or_default().to_string_lossy(),
        )?
        .sha256;
        let mut resolved: Vec<(String, String)> = packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        resolved.push(("agent-sha256".into(), agent_sum));
        let key = cache_key("kernel", recipe, &resolved);
        let dest = self.image_dir(ImageKind::Kernel, &key);
        if !opts.force && dest.join(manifest::MANIFEST).exists() {
            ctx.note(&format!("up to date: {}", dest.display()));
            self.set_current(ImageKind::Kernel, &recipe.name, &dest)?;
            return self.open(&dest);
        }
        let tmp = self.temp_dir(ImageKind::Kernel, &key)?;
        let res = self.build_kernel_in(
            &mut ctx,
            recipe,
            agent,
            &kernel_pkg,
            packages,
            &tmp,
            &key,
            started,
        );
        // The work directory holds unpacked packages; only the image files stay.
        let _ = std::fs::remove_dir_all(tmp.join("work"));
        match res {
            Ok(()) => {
                ctx.step("install the image");
                ctx.copy_log(&tmp.join(BUILD_LOG))?;
                self.install(&tmp, ImageKind::Kernel, &recipe.name, &key)
            }
            Err(e) => {
                let _ = crate::store::remove_tree(&tmp);
                Err(ctx.wrap(e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_kernel_in(
        &self,
        ctx: &mut Ctx<'_>,
        recipe: &KernelRecipe,
        agent: &Path,
        kernel_pkg: &str,
        packages: Vec<PackageVersion>,
        tmp: &Path,
        key: &str,
        started: Instant,
    ) -> Result<()> {
        let work = tmp.join("work");
        let debs = work.join("debs");
        std::fs::create_dir_all(&debs).map_err(Error::io("create the work directory", &debs))?;
        ctx.step("download the kernel and busybox (apt-get download)");
        let kernel_deb = apt::download(ctx, kernel_pkg, &debs)?;
        let bb_deb = apt::download(ctx, &recipe.busybox_package, &debs)?;

        ctx.step("unpack and resolve modules");
        let kroot = work.join("kernel");
        let bbroot = work.join("busybox");
        apt::unpack(ctx, &kernel_deb, &kroot)?;
        apt::unpack(ctx, &bb_deb, &bbroot)?;
        let (vmlinuz, release) = find_vmlinuz(&kroot)?;
        let moddir = kroot.join("lib/modules").join(&release);
        let set = ModuleSet::resolve(&moddir, &recipe.modules)?;
        ctx.note(&format!(
            "modules: {}; built in: {}",
            set.names().join(" "),
            set.builtin.join(" ")
        ));

        ctx.step("assemble the initramfs");
        let mut tree = base_tree();
        add_agent(
            ctx,
            &mut tree,
            agent,
            &work.join("agent"),
            recipe.strip_agent,
        )?;
        add_busybox(ctx, &mut tree, &bbroot)?;
        let mods_in = format!("lib/modules/{release}");
        for m in &set.modules {
            tree.add_file(
                &format!("{mods_in}/{}", m.path),
                0o644,
                &moddir.join(&m.path),
            )?;
        }
        tree.add(
            &format!("{mods_in}/modules.dep"),
            Node::File(0o644, set.modules_dep().into_bytes()),
        );
        if let Ok(b) = std::fs::read(moddir.join("modules.builtin")) {
            tree.add(&format!("{mods_in}/modules.builtin"), Node::File(0o644, b));
        }
        tree.write(&tmp.join("initramfs.cpio"))?;
        std::fs::copy(&vmlinuz, tmp.join("vmlinuz"))
            .map_err(Error::io("copy the kernel", &vmlinuz))?;

        ctx.step("checksums and manifest");
        let files = vec![
            manifest::file_entry(tmp, "vmlinuz")?,
            manifest::file_entry(tmp, "initramfs.cpio")?,
        ];
        Manifest {
            format: FORMAT,
            kind: ImageKind::Kernel,
            name: recipe.name.clone(),
            key: key.to_owned(),
            recipe: serde_json::to_value(recipe).unwrap_or_default(),
            created_unix: now_unix(),
            build_seconds: started.elapsed().as_secs_f64(),
            packages,
            files,
            tree: None,
            kernel_release: Some(release),
            modules: Some(set),
            log: self.image_dir(ImageKind::Kernel, key).join(BUILD_LOG),
        }
        .write(tmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_adds_parents_before_children() {
        let mut t = base_tree();
        t.add("lib/modules/6.1/kernel/a.ko", Node::File(0o644, vec![1]));
        t.add("lib64", Node::Symlink("lib/x86_64-linux-gnu".into()));
        let names: Vec<&String> = t.0.keys().collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("lib") < pos("lib/modules"));
        assert!(pos("lib/modules/6.1/kernel") < pos("lib/modules/6.1/kernel/a.ko"));
        assert!(matches!(t.0["tmp"], Node::Dir(0o1777)));
        let dir = std::env::temp_dir().join(format!("sbx-image-tree-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("i.cpio");
        t.write(&out).unwrap();
        let e = crate::cpio::read_newc(&std::fs::read(&out).unwrap()).unwrap();
        assert!(e
            .iter()
            .any(|e| e.name == "dev/console" && e.is_char_device()));
        assert!(e
            .iter()
            .any(|e| e.name == "lib64" && e.link_target() == Some("lib/x86_64-linux-gnu")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
