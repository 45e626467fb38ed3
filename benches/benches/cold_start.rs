//! Cold start: process start to the first serial byte of the same minimal PVH guest with the
//! same memory, sbx-vmm versus QEMU microvm, measured in one run.
//!
//! `cargo bench -p sbx-benches --bench cold_start`. Prints criterion's estimates and, at the
//! end, a table of medians over `SBX_BENCH_RUNS` (default 30) starts each with the ratio, and
//! the VMM's resident memory beyond guest RAM at the first byte.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use sbx_benches::{median, percentile, time_to_first_byte};

const MEM_MIB: &str = "16";
const VMM: &str = env!("CARGO_BIN_EXE_sbx-coldstart-vmm");

fn ours() -> Command {
    let mut c = Command::new(VMM);
    c.args([sbx_test_guests::MINIMAL, MEM_MIB]);
    c
}

fn qemu() -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "microvm",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-m",
        MEM_MIB,
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-kernel",
        sbx_test_guests::MINIMAL,
    ]);
    c
}

fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

static SAMPLES: Mutex<Vec<(&'static str, Vec<Duration>)>> = Mutex::new(Vec::new());

fn sample(name: &'static str, make: fn() -> Command, runs: usize) -> Vec<Duration> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(time_to_first_byte(&mut make()).unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    v
}

fn cold_start(c: &mut Criterion) {
    let mut group = c.benchmark_group("cold_start");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sbx-vmm", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| time_to_first_byte(&mut ours()).unwrap())
                .sum()
        })
    });
    if qemu_available() {
        group.bench_function("qemu-microvm", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| time_to_first_byte(&mut qemu()).unwrap())
                    .sum()
            })
        });
    } else {
        eprintln!("qemu-system-x86_64 not found (apt-get install qemu-system-x86): no reference");
    }
    group.finish();

    let runs = std::env::var("SBX_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut s = SAMPLES.lock().unwrap();
    s.push(("sbx-vmm", sample("sbx-vmm", ours, runs)));
    if qemu_available() {
        s.push(("qemu microvm", sample("qemu", qemu, runs)));
    }
}

fn report() {
    let s = SAMPLES.lock().unwrap();
    let Some((_, base)) = s.first() else { return };
    let base_median = median(base);
    println!("\ncold start to first serial byte (minimal PVH guest, {MEM_MIB} MiB, 1 vCPU)");
    println!(
        "{:<14} {:>6} {:>11} {:>11} {:>11} {:>9}",
        "vmm", "runs", "median", "p90", "min", "vs ours"
    );
    for (name, v) in s.iter() {
        let m = median(v);
        println!(
            "{:<14} {:>6} {:>9.2}ms {:>9.2}ms {:>9.2}ms {:>8.1}x",
            name,
            v.len(),
            m.as_secs_f64() * 1e3,
            percentile(v, 90.0).as_secs_f64() * 1e3,
            v.iter().min().unwrap().as_secs_f64() * 1e3,
            m.as_secs_f64() / base_median.as_secs_f64()
        );
    }
    // Memory: the VMM reports its own RSS at the first serial byte.
    let out = Command::new(VMM)
        .args([sbx_test_guests::MINIMAL, MEM_MIB])
        .env("SBX_BENCH_RSS", "1")
        .output()
        .expect("run the VMM once for RSS");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr.lines().find(|l| l.starts_with("rss ")) {
        let kib = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let own = kib("anon_kib=") + kib("file_kib=");
        println!(
            "sbx-vmm RSS at first byte: {:.2} MiB beyond guest RAM (anon {} KiB + file {} KiB; guest RAM touched {} KiB)",
            own as f64 / 1024.0,
            kib("anon_kib="),
            kib("file_kib="),
            kib("shmem_kib=")
        );
    }
}

criterion_group!(benches, cold_start);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
