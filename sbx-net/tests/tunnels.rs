//! 200 concurrent tunnels without leaking file descriptors or tasks. Alone in its test
//! binary so no other test's sockets move the process-wide descriptor count.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sbx_net::{Policy, Preset, Scope};

fn allow_api() -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "api.test").unwrap();
    p
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_tunnels_leak_nothing() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(&pki, allow_api(), &["api.test"], |c| c).await;
    // Warm up the leaf cache and lazy statics so the baseline is fair.
    assert_eq!(
        https_get(&tp, "api.test", up.port(), "/warm", &[], false)
            .await
            .unwrap()
            .status,
        200
    );
    assert!(
        wait_until(
            || tp.proxy.active_connections() == 0,
            Duration::from_secs(5)
        )
        .await
    );
    let baseline = open_fds();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    let authority = format!("api.test:{}", up.port());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let barrier = barrier.clone();
        let authority = authority.clone();
        let addr = tp.addr();
        let root = tp.ca.cert_der().clone();
        tasks.push(tokio::spawn(async move {
            let (status, s) = connect(addr, &authority).await;
            assert_eq!(status, 200);
            let tls = tls_connect(s, "api.test", &root, &[b"http/1.1"])
                .await
                .unwrap();
            // Hold every tunnel open at once before sending.
            barrier.wait().await;
            let res = send_many(
                tls,
                false,
                vec![get(&format!("/t{i}"), &[("host", &authority)])],
            )
            .await;
            res[0].as_ref().map(|g| g.status.as_u16()).unwrap_or(0)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    assert_eq!(up.seen().len(), 201);
    assert!(
        wait_until(
            || tp.proxy.active_connections() == 0,
            Duration::from_secs(10)
        )
        .await,
        "connections still tracked: {}",
        tp.proxy.active_connections()
    );
    let settled = wait_until(|| open_fds() <= baseline + 2, Duration::from_secs(10)).await;
    assert!(settled, "fds: baseline {baseline}, now {}", open_fds());
    let tasks_settled = wait_until(
        || metrics.num_alive_tasks() <= tasks_before,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        tasks_settled,
        "tasks: before {tasks_before}, now {}",
        metrics.num_alive_tasks()
    );
}
