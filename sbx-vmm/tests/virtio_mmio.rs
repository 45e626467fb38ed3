//! The virtio-mmio transport, driven through `BusDevice` reads and writes the way a guest
//! driver does.

mod virtio_util;

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use sbx_vmm::arch::x86_64::layout::{VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use sbx_vmm::devices::virtio::{
    device_type, features, status, ActivateError, Interrupt, MmioTransport, Rng, SharedSubscriber,
    VirtioDevice, VirtioError, VirtioMmioSlot, MMIO_MAGIC_VALUE, MMIO_VENDOR_ID,
    VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
};
use sbx_vmm::devices::{Bus, BusDevice};
use sbx_vmm::memory::GuestMemory;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use virtio_util::*;

const ACK: u32 = status::ACKNOWLEDGE;
const DRV: u32 = status::DRIVER;
const FOK: u32 = status::FEATURES_OK;
const DOK: u32 = status::DRIVER_OK;

mod reg {
    pub const MAGIC: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const DEVICE_ID: u64 = 0x08;
    pub const VENDOR_ID: u64 = 0x0c;
    pub const DEVICE_FEATURES: u64 = 0x10;
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    pub const DRIVER_FEATURES: u64 = 0x20;
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    pub const QUEUE_SEL: u64 = 0x30;
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    pub const QUEUE_NUM: u64 = 0x38;
    pub const QUEUE_READY: u64 = 0x44;
    pub const QUEUE_NOTIFY: u64 = 0x50;
    pub const INTERRUPT_STATUS: u64 = 0x60;
    pub const INTERRUPT_ACK: u64 = 0x64;
    pub const STATUS: u64 = 0x70;
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    pub const QUEUE_DRIVER_LOW: u64 = 0x90;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x94;
    pub const QUEUE_DEVICE_LOW: u64 = 0xa0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0xa4;
    pub const SHM_LEN_LOW: u64 = 0xb0;
    pub const CONFIG_GENERATION: u64 = 0xfc;
    pub const CONFIG: u64 = 0x100;
}

fn r32(t: &mut impl BusDevice, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w32(t: &mut impl BusDevice, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// A queue as handed to `activate`: ready, size, descriptor table, avail ring, used ring.
type QueueSeen = (bool, u16, u64, u64, u64);

/// What the fake device saw.
#[derive(Default)]
struct Record {
    acked: Option<u64>,
    activations: Vec<Vec<QueueSeen>>,
    interrupt: Option<Interrupt>,
    event_idx: Vec<bool>,
    resets: usize,
    config: [u8; 8],
}

/// A two-queue device that records what the transport does to it.
struct Fake {
    rec: Arc<Mutex<Record>>,
    evts: Vec<EventFd>,
    fail_activate: bool,
}

const FAKE_FEATURES: u64 = (1 << features::VIRTIO_F_VERSION_1)
    | (1 << features::VIRTIO_RING_F_EVENT_IDX)
    | (1 << 3)
    | (1 << 40);

impl Fake {
    fn new() -> (Self, Arc<Mutex<Record>>) {
        let rec = Arc::new(Mutex::new(Record::default()));
        let evts = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let fake = Self {
            rec: rec.clone(),
            evts,
            fail_activate: false,
        };
        (fake, rec)
    }
}

impl VirtioDevice for Fake {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.evts
    }
    fn avail_features(&self) -> u64 {
        FAKE_FEATURES
    }
    fn ack_features(&mut self, features: u64) {
        self.rec.lock().unwrap().acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let rec = self.rec.lock().unwrap();
        for (i, b) in data.iter_mut().enumerate() {
            *b = rec.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut rec = self.rec.lock().unwrap();
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = rec.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemory,
        interrupt: Interrupt,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::QueueNotReady(0));
        }
        let mut rec = self.rec.lock().unwrap();
        rec.activations.push(
            queues
                .iter()
                .map(|q| {
                    (
                        q.ready(),
                        q.size(),
                        q.desc_table(),
                        q.avail_ring(),
                        q.used_ring(),
                    )
                })
                .collect(),
        );
        rec.interrupt = Some(interrupt);
        rec.event_idx = queues.iter().map(|q| q.event_idx_enabled()).collect();
        Ok(())
    }
    fn reset(&mut self) {
        self.rec.lock().unwrap().resets += 1;
    }
}

impl MutEventSubscriber for Fake {
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {}
    fn init(&mut self, _ops: &mut EventOps<'_>) {}
}

fn fake_transport(mem: &GuestMemory) -> (MmioTransport, Arc<Mutex<Record>>) {
    let (fake, rec) = Fake::new();
    (
        MmioTransport::new(mem.clone(), Arc::new(Mutex::new(fake))).unwrap(),
        rec,
    )
}

/// ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK; returns the status read back.
fn negotiate(t: &mut impl BusDevice, features: u64) -> u32 {
    w32(t, reg::STATUS, ACK);
    w32(t, reg::STATUS, ACK | DRV);
    w32(t, reg::DRIVER_FEATURES_SEL, 0);
    w32(t, reg::DRIVER_FEATURES, features as u32);
    w32(t, reg::DRIVER_FEATURES_SEL, 1);
    w32(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    w32(t, reg::STATUS, ACK | DRV | FOK);
    r32(t, reg::STATUS)
}

fn setup_queue(t: &mut impl BusDevice, sel: u32, size: u32, q: &MockSplitQueue<'_, GuestMemory>) {
    w32(t, reg::QUEUE_SEL, sel);
    w32(t, reg::QUEUE_NUM, size);
    let d = q.desc_table_addr().0;
    let a = q.avail_addr().0;
    let u = q.used_addr().0;
    w32(t, reg::QUEUE_DESC_LOW, d as u32);
    w32(t, reg::QUEUE_DESC_HIGH, (d >> 32) as u32);
    w32(t, reg::QUEUE_DRIVER_LOW, a as u32);
    w32(t, reg::QUEUE_DRIVER_HIGH, (a >> 32) as u32);
    w32(t, reg::QUEUE_DEVICE_LOW, u as u32);
    w32(t, reg::QUEUE_DEVICE_HIGH, (u >> 32) as u32);
    w32(t, reg::QUEUE_READY, 1);
}

/// The whole life of a device as a Linux guest drives it: probe, negotiate, set up a queue,
/// DRIVER_OK, notify through the bus, the event loop processes, interrupt, ack.
#[test]
fn full_init_sequence_with_rng() {
    let mem = guest_memory();
    let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
    let slot = VirtioMmioSlot::new(0, rng.clone(), mem.clone()).unwrap();
    let mut bus = Bus::new();
    slot.insert_on_bus(&mut bus).unwrap();
    let mut em = EventManager::<SharedSubscriber>::new().unwrap();
    em.add_subscriber(slot.subscriber());
    let base = slot.base();
    assert_eq!(base, VIRTIO_MMIO_START);

    // Drive the transport through the bus, as vCPU MMIO exits do.
    struct Via<'a>(&'a Bus, u64);
    impl BusDevice for Via<'_> {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            assert!(self.0.read(self.1 + offset, data));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            assert!(self.0.write(self.1 + offset, data));
        }
    }
    let t = &mut Via(&bus, base);

    assert_eq!(r32(t, reg::MAGIC), MMIO_MAGIC_VALUE);
    assert_eq!(r32(t, reg::VERSION), 2);
    assert_eq!(r32(t, reg::DEVICE_ID), device_type::RNG);
    assert_eq!(r32(t, reg::VENDOR_ID), MMIO_VENDOR_ID);

    w32(t, reg::STATUS, 0);
    w32(t, reg::STATUS, ACK);
    w32(t, reg::STATUS, ACK | DRV);
    w32(t, reg::DEVICE_FEATURES_SEL, 0);
    let lo = r32(t, reg::DEVICE_FEATURES);
    w32(t, reg::DEVICE_FEATURES_SEL, 1);
    let hi = r32(t, reg::DEVICE_FEATURES);
    let offered = (u64::from(hi) << 32) | u64::from(lo);
    assert_ne!(offered & (1 << features::VIRTIO_F_VERSION_1), 0);
    w32(t, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(r32(t, reg::DEVICE_FEATURES), 0);
    w32(t, reg::DRIVER_FEATURES_SEL, 0);
    w32(t, reg::DRIVER_FEATURES, offered as u32);
    w32(t, reg::DRIVER_FEATURES_SEL, 1);
    w32(t, reg::DRIVER_FEATURES, (offered >> 32) as u32);
    w32(t, reg::STATUS, ACK | DRV | FOK);
    assert_eq!(r32(t, reg::STATUS), ACK | DRV | FOK);

    let q = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    w32(t, reg::QUEUE_SEL, 0);
    assert_eq!(r32(t, reg::QUEUE_NUM_MAX), 256);
    assert_eq!(r32(t, reg::QUEUE_READY), 0);
    setup_queue(t, 0, 16, &q);
    assert_eq!(r32(t, reg::QUEUE_READY), 1);
    assert!(!rng.lock().unwrap().is_activated());
    w32(t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(r32(t, reg::STATUS), ACK | DRV | FOK | DOK);
    assert!(rng.lock().unwrap().is_activated());
    assert!(slot.transport().lock().unwrap().is_activated());

    // A request, notified through the MMIO exit path (no ioeventfd here).
    add_chain(&q, 0, &[wr(BUF_BASE, 32)]);
    w32(t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(em.run_with_timeout(1000).unwrap(), 1);
    assert_eq!(used_idx(&q), 1);
    assert_eq!(used_elem(&q, 0), (0, 32));
    assert_ne!(read_bytes(&mem, BUF_BASE, 32), vec![0; 32]);

    assert_eq!(r32(t, reg::INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    let transport = slot.transport().clone();
    assert_eq!(transport.lock().unwrap().interrupt_evt().read().unwrap(), 1);
    w32(t, reg::INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(r32(t, reg::INTERRUPT_STATUS), 0);

    // Reset through the status register.
    w32(t, reg::STATUS, 0);
    assert_eq!(r32(t, reg::STATUS), 0);
    assert!(!rng.lock().unwrap().is_activated());
    assert_eq!(r32(t, reg::QUEUE_READY), 0);
    let m = transport.lock().unwrap().metrics();
    assert_eq!((m.activations.get(), m.notify_exits.get()), (1, 1));
    assert_eq!(
        (
            m.invalid_status.get(),
            m.unknown_register.get(),
            m.bad_access_size.get()
        ),
        (0, 0, 0)
    );
}

#[test]
fn activation_hands_over_the_driver_queue_setup() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    assert_eq!(r32(&mut t, reg::DEVICE_ID), 42);
    assert_eq!(negotiate(&mut t, FAKE_FEATURES), ACK | DRV | FOK);
    assert_eq!(rec.lock().unwrap().acked, Some(FAKE_FEATURES));

    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    w32(&mut t, reg::QUEUE_SEL, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), 8);
    w32(&mut t, reg::QUEUE_SEL, 2);
    assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), 0, "no queue 2");
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV | FOK | DOK);

    let rec = rec.lock().unwrap();
    assert_eq!(rec.activations.len(), 1);
    let qs = &rec.activations[0];
    assert_eq!(qs.len(), 2);
    assert_eq!(
        qs[0],
        (
            true,
            16,
            q0.desc_table_addr().0,
            q0.avail_addr().0,
            q0.used_addr().0
        )
    );
    assert!(!qs[1].0, "queue 1 was never made ready");
    assert_eq!(qs[1].1, 8);
    assert_eq!(rec.event_idx, [true, true]);
}

#[test]
fn unused_queue_registers_do_not_matter() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    negotiate(&mut t, FAKE_FEATURES);
    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    // Garbage in queue 1, never made ready.
    w32(&mut t, reg::QUEUE_SEL, 1);
    w32(&mut t, reg::QUEUE_DESC_LOW, 0x1003);
    w32(&mut t, reg::QUEUE_DEVICE_HIGH, 0xffff_ffff);
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV | FOK | DOK);
    assert_eq!(rec.lock().unwrap().activations[0][1], (false, 8, 0, 0, 0));
}

#[test]
fn event_index_only_when_negotiated() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    let without = FAKE_FEATURES & !(1 << features::VIRTIO_RING_F_EVENT_IDX);
    assert_eq!(negotiate(&mut t, without), ACK | DRV | FOK);
    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(rec.lock().unwrap().event_idx, [false, false]);
}

#[test]
fn feature_negotiation_failures() {
    let mem = guest_memory();
    // Unknown feature bit.
    let (mut t, rec) = fake_transport(&mem);
    assert_eq!(negotiate(&mut t, FAKE_FEATURES | (1 << 5)), ACK | DRV);
    assert_eq!(rec.lock().unwrap().acked, None);
    // The driver may not go on to DRIVER_OK.
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV);
    assert!(rec.lock().unwrap().activations.is_empty());
    // Retrying with a good set after the refusal works.
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w32(&mut t, reg::DRIVER_FEATURES, FAKE_FEATURES as u32);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV | FOK);
    let m = t.metrics();
    assert_eq!(m.features_rejected.get(), 1);
    assert_eq!(m.invalid_status.get(), 1);

    // VIRTIO_F_VERSION_1 not accepted: a legacy driver cannot use a v2 transport.
    let (mut t, _) = fake_transport(&mem);
    assert_eq!(negotiate(&mut t, 1 << 3), ACK | DRV);

    // Nonzero acks in feature pages beyond 64 bits.
    let (mut t, _) = fake_transport(&mem);
    w32(&mut t, reg::STATUS, ACK);
    w32(&mut t, reg::STATUS, ACK | DRV);
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 3);
    w32(&mut t, reg::DRIVER_FEATURES, 1);
    assert_eq!(negotiate(&mut t, FAKE_FEATURES), ACK | DRV);

    // Features written before DRIVER are ignored (and counted).
    let (mut t, rec) = fake_transport(&mem);
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w32(&mut t, reg::DRIVER_FEATURES, 1 << 3);
    assert_eq!(t.metrics().invalid_state_writes.get(), 1);
    assert_eq!(negotiate(&mut t, FAKE_FEATURES), ACK | DRV | FOK);
    assert_eq!(rec.lock().unwrap().acked, Some(FAKE_FEATURES));
    // ... and after FEATURES_OK too.
    w32(&mut t, reg::DRIVER_FEATURES, 0);
    assert_eq!(t.metrics().invalid_state_writes.get(), 2);
}

#[test]
fn status_state_machine() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    // Skipping ACKNOWLEDGE.
    w32(&mut t, reg::STATUS, DRV);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    // DRIVER_OK straight after DRIVER.
    w32(&mut t, reg::STATUS, ACK);
    w32(&mut t, reg::STATUS, ACK | DRV);
    w32(&mut t, reg::STATUS, ACK | DRV | DOK);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV);
    // Clearing a bit without a reset.
    w32(&mut t, reg::STATUS, ACK);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV);
    // Writing the same status again is harmless.
    w32(&mut t, reg::STATUS, ACK | DRV);
    assert_eq!(t.metrics().invalid_status.get(), 3);

    // FAILED can be set at any time and blocks progress until reset.
    w32(&mut t, reg::STATUS, ACK | DRV | status::FAILED);
    assert_eq!(r32(&mut t, reg::STATUS), ACK | DRV | status::FAILED);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK);
    assert_eq!(r32(&mut t, reg::STATUS) & FOK, 0);

    // Reset, then a full init activates.
    w32(&mut t, reg::STATUS, 0);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    assert_eq!(
        rec.lock().unwrap().resets,
        0,
        "never activated, nothing to reset"
    );
    assert_eq!(negotiate(&mut t, FAKE_FEATURES), ACK | DRV | FOK);
    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert!(t.is_activated());
    // Queue setup after DRIVER_OK is refused.
    w32(&mut t, reg::QUEUE_NUM, 4);
    assert!(t.metrics().invalid_state_writes.get() >= 1);

    // Reset while active resets the device and every register.
    let irq = rec.lock().unwrap().interrupt.clone().unwrap();
    irq.signal_used_queue();
    w32(&mut t, reg::STATUS, 0);
    assert_eq!(rec.lock().unwrap().resets, 1);
    assert!(!t.is_activated());
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 0);
    w32(&mut t, reg::QUEUE_SEL, 0);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(t.metrics().resets.get(), 2);
}

#[test]
fn failed_activation_sets_needs_reset() {
    let mem = guest_memory();
    // The device refuses.
    let (mut fake, _rec) = Fake::new();
    fake.fail_activate = true;
    let mut t = MmioTransport::new(mem.clone(), Arc::new(Mutex::new(fake))).unwrap();
    negotiate(&mut t, FAKE_FEATURES);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    let s = r32(&mut t, reg::STATUS);
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(r32(&mut t, reg::CONFIG_GENERATION), 1);
    assert!(!t.is_activated());
    assert_eq!(t.metrics().activate_fails.get(), 1);

    // Rng with its queue never made ready.
    let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
    let mut t = MmioTransport::new(mem.clone(), rng.clone()).unwrap();
    negotiate(&mut t, 1 << features::VIRTIO_F_VERSION_1);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_ne!(r32(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert!(!rng.lock().unwrap().is_activated());

    // Rings outside guest memory.
    let (mut t, rec) = fake_transport(&mem);
    negotiate(&mut t, FAKE_FEATURES);
    w32(&mut t, reg::QUEUE_SEL, 0);
    w32(&mut t, reg::QUEUE_DESC_LOW, 0);
    w32(&mut t, reg::QUEUE_DESC_HIGH, 0x10);
    w32(&mut t, reg::QUEUE_READY, 1);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_ne!(r32(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert!(rec.lock().unwrap().activations.is_empty());

    // Misaligned descriptor table.
    let (mut t, _) = fake_transport(&mem);
    negotiate(&mut t, FAKE_FEATURES);
    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::QUEUE_DESC_LOW, 0x1004);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_ne!(r32(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);

    // A reset recovers.
    w32(&mut t, reg::STATUS, 0);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
}

#[test]
fn bad_queue_configuration() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    negotiate(&mut t, FAKE_FEATURES);
    w32(&mut t, reg::QUEUE_SEL, 0);
    for bad in [0u32, 3, 32, 0x1_0000] {
        w32(&mut t, reg::QUEUE_NUM, bad);
    }
    w32(&mut t, reg::QUEUE_SEL, 7);
    w32(&mut t, reg::QUEUE_NUM, 4);
    w32(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(t.metrics().bad_queue_config.get(), 6);
    // Notify for a missing queue.
    w32(&mut t, reg::QUEUE_NOTIFY, 9);
    assert_eq!(t.metrics().bad_queue_config.get(), 7);

    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::QUEUE_NUM, 8);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(rec.lock().unwrap().activations[0][0].1, 8);
}

#[test]
fn notify_signals_the_queue_eventfd() {
    let mem = guest_memory();
    let (mut t, _) = fake_transport(&mem);
    w32(&mut t, reg::QUEUE_NOTIFY, 1);
    w32(&mut t, reg::QUEUE_NOTIFY, 1);
    assert_eq!(t.queue_events()[1].read().unwrap(), 2);
    assert!(
        t.queue_events()[0].read().is_err(),
        "queue 0 was not notified"
    );
}

#[test]
fn unknown_offsets_and_bad_sizes() {
    let mem = guest_memory();
    let (mut t, _) = fake_transport(&mem);

    for off in [0x018u64, 0x0c0, 0x0f0, 0x0f8] {
        assert_eq!(r32(&mut t, off), 0);
    }
    // Writes to read-only or unknown registers.
    w32(&mut t, reg::MAGIC, 0);
    w32(&mut t, reg::INTERRUPT_STATUS, 3);
    w32(&mut t, 0x0f0, 1);
    assert_eq!(t.metrics().unknown_register.get(), 7);
    assert_eq!(r32(&mut t, reg::MAGIC), MMIO_MAGIC_VALUE);

    // Wrong sizes and alignment on registers: zeros, ignored writes.
    let mut two = [0xffu8; 2];
    t.read(reg::MAGIC, &mut two);
    assert_eq!(two, [0, 0]);
    let mut eight = [0xffu8; 8];
    t.read(reg::MAGIC, &mut eight);
    assert_eq!(eight, [0; 8]);
    let mut one = [0xffu8; 1];
    t.read(reg::MAGIC + 1, &mut one);
    assert_eq!(one, [0]);
    let mut four = [0xffu8; 4];
    t.read(reg::MAGIC + 2, &mut four);
    assert_eq!(four, [0; 4]);
    t.write(reg::STATUS, &[ACK as u8]);
    t.write(reg::STATUS + 1, &ACK.to_le_bytes());
    t.write(reg::STATUS, &u64::from(ACK).to_le_bytes());
    t.read(reg::STATUS, &mut []);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    assert_eq!(t.metrics().bad_access_size.get(), 8);

    // No shared memory regions.
    assert_eq!(r32(&mut t, reg::SHM_LEN_LOW), u32::MAX);
}

#[test]
fn config_space_accepts_any_size() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    t.write(reg::CONFIG, &0x0807_0605_0403_0201u64.to_le_bytes());
    assert_eq!(rec.lock().unwrap().config, [1, 2, 3, 4, 5, 6, 7, 8]);
    let mut b = [0u8; 1];
    t.read(reg::CONFIG + 5, &mut b);
    assert_eq!(b, [6]);
    let mut h = [0u8; 2];
    t.read(reg::CONFIG + 1, &mut h);
    assert_eq!(h, [2, 3]);
    assert_eq!(r32(&mut t, reg::CONFIG + 4), 0x0807_0605);
    assert_eq!(r32(&mut t, reg::CONFIG_GENERATION), 0);
    assert_eq!(t.metrics().bad_access_size.get(), 0);
}

#[test]
fn config_change_interrupt() {
    let mem = guest_memory();
    let (mut t, rec) = fake_transport(&mem);
    negotiate(&mut t, FAKE_FEATURES);
    let q0 = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    setup_queue(&mut t, 0, 16, &q0);
    w32(&mut t, reg::STATUS, ACK | DRV | FOK | DOK);
    let irq = rec.lock().unwrap().interrupt.clone().unwrap();
    irq.signal_config_change();
    assert_eq!(r32(&mut t, reg::CONFIG_GENERATION), 1);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    irq.signal_used_queue();
    w32(&mut t, reg::INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    assert_eq!(t.interrupt_evt().read().unwrap(), 2);
}

#[test]
fn slots_map_to_windows_and_irqs() {
    let mem = guest_memory();
    let (fake, _) = Fake::new();
    let slot = VirtioMmioSlot::new(3, Arc::new(Mutex::new(fake)), mem.clone()).unwrap();
    assert_eq!(slot.base(), VIRTIO_MMIO_START + 3 * VIRTIO_MMIO_SIZE);
    assert_eq!(slot.size(), VIRTIO_MMIO_SIZE);
    assert_eq!(slot.gsi(), VIRTIO_IRQ_BASE + 3);
    let mut bus = Bus::new();
    slot.insert_on_bus(&mut bus).unwrap();
    assert!(matches!(
        slot.insert_on_bus(&mut bus),
        Err(VirtioError::Bus(_))
    ));
    let mut magic = [0u8; 4];
    assert!(bus.read(slot.base(), &mut magic));
    assert_eq!(u32::from_le_bytes(magic), MMIO_MAGIC_VALUE);

    let (fake, _) = Fake::new();
    let err = VirtioMmioSlot::new(100, Arc::new(Mutex::new(fake)), mem).unwrap_err();
    assert!(matches!(err, VirtioError::NoSlot(100)));
}

/// With KVM: ioeventfds at base + 0x50 and the irqfd register, and a second registration of
/// the same window is refused by KVM.
#[test]
fn registers_ioeventfds_and_irqfd_with_kvm() {
    let Some(kvm) = kvm() else {
        return;
    };
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let mem = guest_memory();
    let (fake, _) = Fake::new();
    let slot = VirtioMmioSlot::new(0, Arc::new(Mutex::new(fake)), mem.clone()).unwrap();
    slot.register_kvm(&vm).unwrap();
    let err = slot.register_kvm(&vm).unwrap_err();
    assert!(
        matches!(err, VirtioError::IoEventFd { queue: 0, .. }),
        "{err:?}"
    );

    let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
    let slot = VirtioMmioSlot::new(1, rng, mem).unwrap();
    let mut bus = Bus::new();
    let mut em = EventManager::<SharedSubscriber>::new().unwrap();
    slot.attach(&vm, &mut bus, &mut em).unwrap();
}

/// `/dev/kvm`, or `None` (skip) when absent; `SBX_REQUIRE_KVM=1` turns a skip into a failure.
fn kvm() -> Option<kvm_ioctls::Kvm> {
    match kvm_ioctls::Kvm::new() {
        Ok(k) => Some(k),
        Err(e) => {
            assert!(
                std::env::var("SBX_REQUIRE_KVM").as_deref() != Ok("1"),
                "KVM required but unavailable: {e}"
            );
            None
        }
    }
}
