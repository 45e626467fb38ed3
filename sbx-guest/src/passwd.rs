//! `/etc/passwd` and `/etc/group` read directly from the sandbox's root (no NSS: the agent may
//! run with a different libc than the image, or none).

use std::io;
use std::path::{Path, PathBuf};

/// One `/etc/passwd` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: PathBuf,
}

/// Parses `/etc/passwd` text, skipping malformed lines.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                shell: PathBuf::from(f[6]),
            })
        })
        .collect()
}

/// Group ids listing `user` as a member in `/etc/group` text.
pub fn parse_groups_of(text: &str, user: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let gid: u32 = f[2].parse().ok()?;
            f[3].split(',').any(|m| m.trim() == user).then_some(gid)
        })
        .collect()
}

fn read_optional(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Looks a user up by name under `root`.
pub(crate) fn by_name(root: &Path, name: &str) -> io::Result<Option<PasswdEntry>> {
    let text = read_optional(&root.join("etc/passwd"))?;
    Ok(parse_passwd(&text).into_iter().find(|e| e.name == name))
}

/// Looks a user up by uid under `root`.
pub(crate) fn by_uid(root: &Path, uid: u32) -> io::Result<Option<PasswdEntry>> {
    let text = read_optional(&root.join("etc/passwd"))?;
    Ok(parse_passwd(&text).into_iter().find(|e| e.uid == uid))
}

/// Primary plus supplementary groups of `user` under `root`, deduplicated.
pub(crate) fn groups(root: &Path, user: &str, primary: u32) -> io::Result<Vec<u32>> {
    let text = read_optional(&root.join("etc/group"))?;
    let mut g = vec![primary];
    for id in parse_groups_of(&text, user) {
        if !g.contains(&id) {
            g.push(id);
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_parsing() {
        let t = "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\nagent:x:1000:1000:Agent,,,:/home/agent:/bin/bash\nx:x:notanumber:0::/:/bin/sh\n";
        let v = parse_passwd(t);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].name, "agent");
        assert_eq!(v[1].uid, 1000);
        assert_eq!(v[1].home, PathBuf::from("/home/agent"));
        assert_eq!(v[1].shell, PathBuf::from("/bin/bash"));
    }

    #[test]
    fn group_membership() {
        let t = "root:x:0:\nsudo:x:27:agent,other\ndocker:x:999: agent\nagent:x:1000:\n";
        assert_eq!(parse_groups_of(t, "agent"), vec![27, 999]);
        assert!(parse_groups_of(t, "nobody").is_empty());
    }
}
