//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while building, reading or listing images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("{what}: {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tool (mmdebstrap, apt-get, dpkg-deb, mkfs.ext4...) could not be started.
    #[error("cannot run {tool} (is it installed? see scripts/install-deps)")]
    Tool {
        /// The program name.
        tool: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Packages the host's apt sources do not know.
    #[error("unknown package(s) not in the host's apt sources: {}", .0.join(", "))]
    UnknownPackages(Vec<String>),
    /// A build step failed; the previous image (if any) is untouched.
    #[error("image build failed at step \"{step}\": {reason} (build log: {})", log.display())]
    Build {
        /// The step that failed.
        step: String,
        /// A short reason (the command and its exit status, or the last log lines).
        reason: String,
        /// The kept build log.
        log: PathBuf,
    },
    /// A kernel module the recipe asks for is neither a `.ko` file nor built in.
    #[error("kernel module {module} not found (needed by {needed_by})")]
    Module {
        /// The missing module.
        module: String,
        /// Who asked for it (the recipe, or the module that depends on it).
        needed_by: String,
    },
    /// A file is not what it should be (bad ELF, bad cpio, bad manifest...).
    #[error("{what}: {reason}")]
    Format {
        /// Which file or structure.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A path given by the user (their own kernel, initramfs or rootfs) does not exist.
    #[error("{what} not found: {}", path.display())]
    Missing {
        /// What was expected there.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// No image of that kind has been built yet.
    #[error("no {0} image built yet (run `sbx image build`)")]
    NotBuilt(&'static str),
    /// A manifest could not be (de)serialized.
    #[error("manifest {}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The guest agent could not be installed into the initramfs.
    #[error("install the guest agent")]
    Agent(#[source] sbx_guest::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    pub(crate) fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
