//! A test "guest driver" for virtio-fs: it initialises the device through the virtio-mmio
//! registers, lays out split rings in guest memory, sends FUSE requests and waits for the
//! interrupt, with a real `virtiofsd` behind the device.
#![allow(dead_code)]

pub mod fuse;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use sbx_vmm::devices::virtio::{
    status, Fs, FsConfig, MmioTransport, SharedSubscriber, VirtioMmioSlot, MMIO_CONFIG_OFFSET,
    VIRTIO_MMIO_INT_VRING,
};
use sbx_vmm::devices::BusDevice;
use sbx_vmm::memory::{create_guest_memory, GuestMemory};
use sbx_vmm::virtiofsd::{find_virtiofsd, SandboxMode, Virtiofsd, VirtiofsdConfig};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use fuse::*;

/// Queue size the test driver uses.
pub const QSIZE: u16 = 16;
const MEM_SIZE: u64 = 16 << 20;
/// Ring areas: queue q at RING_BASE + q * 0x1000 (desc), + 0x400 (avail), + 0x800 (used).
const RING_BASE: u64 = 0x10000;
/// Request and reply buffers.
const REQ_BUF: u64 = 0x100000;
const REPLY_BUF: u64 = 0x200000;
pub const REPLY_LEN: u32 = 0x10000;

pub const REQUEST_QUEUE: u16 = 1;

/// The `virtiofsd` binary, or `None` (after printing why) when the test should skip. With
/// `CI=true` or `SBX_REQUIRE_VIRTIOFSD=1` a missing binary fails the test instead.
pub fn virtiofsd_or_skip() -> Option<PathBuf> {
    if let Some(p) = find_virtiofsd() {
        return Some(p);
    }
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SBX_REQUIRE_VIRTIOFSD").is_ok_and(|v| v == "1");
    if required {
        panic!("virtiofsd is required (CI=true or SBX_REQUIRE_VIRTIOFSD=1) but was not found");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipping: virtiofsd not found (run scripts/install-deps)");
    }
    None
}

/// A shared directory, a directory next to it that the guest must not reach, and a socket
/// path, all under one temporary directory.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub shared: PathBuf,
    pub outside: PathBuf,
    pub socket: PathBuf,
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new()
        .prefix("sbx-vfs-")
        .tempdir()
        .unwrap();
    let shared = tmp.path().join("shared");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let socket = tmp.path().join("fs.sock");
    Dirs {
        tmp,
        shared,
        outside,
        socket,
    }
}

pub fn start_virtiofsd(binary: &Path, d: &Dirs, sandbox: SandboxMode) -> Virtiofsd {
    let config = VirtiofsdConfig::new(&d.shared, &d.socket)
        .binary(binary)
        .sandbox(sandbox)
        .log_level("warn");
    Virtiofsd::spawn(&config).unwrap()
}

/// Whether we may use the namespace/chroot sandboxes (root, or unprivileged user namespaces).
pub fn can_sandbox() -> bool {
    nix::unistd::geteuid().is_root()
        || std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
            .map_or(true, |v| v.trim() == "1")
}

/// The device behind its transport, with the event loop running on a thread.
pub struct Harness {
    pub mem: GuestMemory,
    pub fs: Arc<Mutex<Fs>>,
    pub transport: Arc<Mutex<MmioTransport>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    next_avail: [u16; 2],
    last_used: [u16; 2],
    next_desc: u16,
    unique: u64,
    reply_buf: u64,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

impl Harness {
    pub fn new(socket: &Path) -> Self {
        Self::with_memory(socket, MEM_SIZE, REPLY_BUF)
    }

    /// A harness with `mem_size` bytes of guest RAM whose FUSE replies land at `reply_buf`.
    pub fn with_memory(socket: &Path, mem_size: u64, reply_buf: u64) -> Self {
        let mem = create_guest_memory(mem_size).unwrap();
        let fs = Arc::new(Mutex::new(
            Fs::new(FsConfig::new("workspace", socket)).unwrap(),
        ));
        let slot = VirtioMmioSlot::new(0, fs.clone(), mem.clone()).unwrap();
        let transport = slot.transport().clone();
        let mut em = EventManager::<SharedSubscriber>::new().unwrap();
        em.add_subscriber(slot.subscriber());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let _slot = slot;
            while !stop2.load(Ordering::SeqCst) {
                em.run_with_timeout(20).unwrap();
            }
        });
        Self {
            mem,
            fs,
            transport,
            stop,
            thread: Some(thread),
            next_avail: [0; 2],
            last_used: [0; 2],
            next_desc: 0,
            unique: 0,
            reply_buf,
        }
    }

    pub fn read_reg(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        lock(&self.transport).read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write_reg(&self, offset: u64, v: u32) {
        lock(&self.transport).write(offset, &v.to_le_bytes());
    }

    pub fn read_config(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        lock(&self.transport).read(MMIO_CONFIG_OFFSET + offset, &mut b);
        b
    }

    pub fn status(&self) -> u32 {
        self.read_reg(0x70)
    }

    /// Device features (both halves).
    pub fn device_features(&self) -> u64 {
        self.write_reg(0x14, 0);
        let lo = self.read_reg(0x10);
        self.write_reg(0x14, 1);
        let hi = self.read_reg(0x10);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// The virtio init sequence up to `DRIVER_OK`, accepting only `VIRTIO_F_VERSION_1`, with
    /// both queues of `QSIZE` entries. Returns the final status register.
    pub fn init(&mut self) -> u32 {
        self.next_avail = [0; 2];
        self.last_used = [0; 2];
        self.next_desc = 0;
        for q in 0..2u64 {
            let base = RING_BASE + q * 0x1000;
            self.mem
                .write_slice(&[0u8; 0x1000], GuestAddress(base))
                .unwrap();
        }
        self.write_reg(0x70, 0);
        self.write_reg(0x70, status::ACKNOWLEDGE);
        self.write_reg(0x70, status::ACKNOWLEDGE | status::DRIVER);
        self.write_reg(0x24, 0);
        self.write_reg(0x20, 0);
        self.write_reg(0x24, 1);
        self.write_reg(0x20, 1); // VIRTIO_F_VERSION_1 is bit 32
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write_reg(0x70, s);
        assert_eq!(
            self.status() & !status::DEVICE_NEEDS_RESET,
            s,
            "FEATURES_OK refused"
        );
        for q in 0..2u32 {
            let base = RING_BASE + u64::from(q) * 0x1000;
            self.write_reg(0x30, q);
            assert!(self.read_reg(0x34) >= u32::from(QSIZE));
            self.write_reg(0x38, u32::from(QSIZE));
            self.write_reg(0x80, base as u32);
            self.write_reg(0x84, 0);
            self.write_reg(0x90, (base + 0x400) as u32);
            self.write_reg(0x94, 0);
            self.write_reg(0xa0, (base + 0x800) as u32);
            self.write_reg(0xa4, 0);
            self.write_reg(0x44, 1);
        }
        self.write_reg(0x70, s | status::DRIVER_OK);
        self.status()
    }

    /// Send one FUSE request (`header` + `body`) on the request queue and return the reply
    /// header and bytes after it, or `None` if no reply came within `timeout`.
    pub fn request_timeout(
        &mut self,
        opcode: u32,
        nodeid: u64,
        body: &[u8],
        timeout: Duration,
    ) -> Option<(OutHeader, Vec<u8>)> {
        self.unique += 1;
        let hdr = InHeader {
            len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
            opcode,
            unique: self.unique,
            nodeid,
            uid: 1000,
            gid: 1000,
            pid: 1,
            padding: 0,
        };
        let mut req = hdr.as_slice().to_vec();
        req.extend_from_slice(body);
        self.mem.write_slice(&req, GuestAddress(REQ_BUF)).unwrap();
        self.mem
            .write_slice(&vec![0u8; REPLY_LEN as usize], GuestAddress(self.reply_buf))
            .unwrap();

        let q = usize::from(REQUEST_QUEUE);
        let base = RING_BASE + u64::from(REQUEST_QUEUE) * 0x1000;
        let head = self.next_desc % QSIZE;
        let second = (head + 1) % QSIZE;
        self.next_desc = self.next_desc.wrapping_add(2);
        write_desc(&self.mem, base, head, REQ_BUF, req.len() as u32, 1, second);
        write_desc(&self.mem, base, second, self.reply_buf, REPLY_LEN, 2, 0);
        let avail = base + 0x400;
        let slot = u64::from(self.next_avail[q] % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        self.next_avail[q] = self.next_avail[q].wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.next_avail[q], GuestAddress(avail + 2))
            .unwrap();
        std::sync::atomic::fence(Ordering::SeqCst);
        self.write_reg(0x50, u32::from(REQUEST_QUEUE));

        let used = base + 0x800;
        let deadline = Instant::now() + timeout;
        loop {
            let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
            if idx != self.last_used[q] {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let slot = u64::from(self.last_used[q] % QSIZE);
        self.last_used[q] = self.last_used[q].wrapping_add(1);
        let id: u32 = self
            .mem
            .read_obj(GuestAddress(used + 4 + 8 * slot))
            .unwrap();
        let len: u32 = self
            .mem
            .read_obj(GuestAddress(used + 8 + 8 * slot))
            .unwrap();
        assert_eq!(id, u32::from(head), "used ring returned another chain");
        let out: OutHeader = self.mem.read_obj(GuestAddress(self.reply_buf)).unwrap();
        assert_eq!(out.unique, self.unique);
        assert_eq!(out.len, len, "used length and FUSE reply length differ");
        let body_len = (len as usize).saturating_sub(std::mem::size_of::<OutHeader>());
        let mut data = vec![0u8; body_len];
        self.mem
            .read_slice(&mut data, GuestAddress(self.reply_buf + 16))
            .unwrap();
        Some((out, data))
    }

    pub fn request(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> (OutHeader, Vec<u8>) {
        self.request_timeout(opcode, nodeid, body, Duration::from_secs(10))
            .expect("no reply from virtiofsd within 10 s")
    }

    /// Wait until the interrupt status has `bit`; then acknowledge it.
    pub fn wait_interrupt(&self, bit: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.read_reg(0x60) & bit != 0 {
                self.write_reg(0x64, bit);
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    pub fn fuse_init(&mut self) -> InitOut {
        let init = InitIn {
            major: FUSE_KERNEL_VERSION,
            minor: FUSE_KERNEL_MINOR_VERSION,
            max_readahead: 0x20000,
            flags: 0,
        };
        let (h, body) = self.request(FUSE_INIT, 0, init.as_slice());
        assert_eq!(h.error, 0, "FUSE_INIT failed");
        assert!(
            self.wait_interrupt(VIRTIO_MMIO_INT_VRING, Duration::from_secs(5)),
            "no used-buffer interrupt after FUSE_INIT"
        );
        read_struct(&body)
    }

    /// `Ok(entry)` or `Err(errno)`.
    pub fn lookup(&mut self, parent: u64, name: &str) -> Result<EntryOut, i32> {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        let (h, data) = self.request(FUSE_LOOKUP, parent, &body);
        if h.error != 0 {
            return Err(-h.error);
        }
        Ok(read_struct(&data))
    }

    pub fn getattr(&mut self, node: u64) -> Result<Attr, i32> {
        let (h, data) = self.request(FUSE_GETATTR, node, GetattrIn::default().as_slice());
        if h.error != 0 {
            return Err(-h.error);
        }
        Ok(read_struct::<AttrOut>(&data).attr)
    }

    pub fn open(&mut self, node: u64, flags: u32) -> Result<u64, i32> {
        let (h, data) = self.request(
            FUSE_OPEN,
            node,
            OpenIn {
                flags,
                open_flags: 0,
            }
            .as_slice(),
        );
        if h.error != 0 {
            return Err(-h.error);
        }
        Ok(read_struct::<OpenOut>(&data).fh)
    }

    pub fn read(&mut self, node: u64, fh: u64, size: u32) -> Result<Vec<u8>, i32> {
        let r = ReadIn {
            fh,
            offset: 0,
            size,
            ..Default::default()
        };
        let (h, data) = self.request(FUSE_READ, node, r.as_slice());
        if h.error != 0 {
            return Err(-h.error);
        }
        Ok(data)
    }

    /// Create `name` in `parent` as guest uid/gid 1000; returns (entry, fh).
    pub fn create(&mut self, parent: u64, name: &str, mode: u32) -> Result<(EntryOut, u64), i32> {
        let c = CreateIn {
            flags: (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32,
            mode: libc::S_IFREG | mode,
            umask: 0o022,
            open_flags: 0,
        };
        let mut body = c.as_slice().to_vec();
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        let (h, data) = self.request(FUSE_CREATE, parent, &body);
        if h.error != 0 {
            return Err(-h.error);
        }
        let entry: EntryOut = read_struct(&data);
        let open: OpenOut = read_struct(&data[std::mem::size_of::<EntryOut>()..]);
        Ok((entry, open.fh))
    }

    pub fn write(&mut self, node: u64, fh: u64, data: &[u8]) -> Result<u32, i32> {
        let w = WriteIn {
            fh,
            offset: 0,
            size: data.len() as u32,
            ..Default::default()
        };
        let mut body = w.as_slice().to_vec();
        body.extend_from_slice(data);
        let (h, out) = self.request(FUSE_WRITE, node, &body);
        if h.error != 0 {
            return Err(-h.error);
        }
        Ok(read_struct::<WriteOut>(&out).size)
    }

    pub fn release(&mut self, node: u64, fh: u64) {
        let r = ReleaseIn {
            fh,
            ..Default::default()
        };
        let (h, _) = self.request(FUSE_RELEASE, node, r.as_slice());
        assert_eq!(h.error, 0, "FUSE_RELEASE failed");
    }
}

fn write_desc(mem: &GuestMemory, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = table + 16 * u64::from(i);
    mem.write_obj(addr, GuestAddress(at)).unwrap();
    mem.write_obj(len, GuestAddress(at + 8)).unwrap();
    mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
    mem.write_obj(next, GuestAddress(at + 14)).unwrap();
}

/// Read a `T` from the front of `data` (zero-filled if the reply was shorter).
pub fn read_struct<T: ByteValued + Default>(data: &[u8]) -> T {
    let mut v = T::default();
    let dst = v.as_mut_slice();
    let n = dst.len().min(data.len());
    dst[..n].copy_from_slice(&data[..n]);
    v
}
