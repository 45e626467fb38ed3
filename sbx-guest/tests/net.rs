//! Guest network setup: interface address, route and MTU inside network namespaces the tests
//! create (a TAP named like the guest's NIC stands in for virtio-net), resolv.conf and the CA
//! in temporary roots, and the agent flags end to end in a namespace sandbox. Needs root.

mod common;

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{within, Opts, Sandbox, TempDir};
use sbx_exec::ExecRequest;
use sbx_guest::{
    configure_network, install_ca_cert, write_resolv_conf, Error, NetSetup, CA_BUNDLE_PATH,
    CA_CERT_PATH,
};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBsbxTESTsbxTESTsbxTEST\nc2J4IHRlc3QgY2E=\n-----END CERTIFICATE-----\n";

/// Run `f` on a thread of its own in a fresh network namespace (threads have their own).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    within(60, move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        f()
    })
}

/// Run a command in the calling thread's network namespace (children inherit it).
fn run(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The routing table of this thread's namespace: (iface, dest, gateway, flags, mask) in the
/// kernel's hex notation.
fn routes() -> Vec<[String; 5]> {
    std::fs::read_to_string("/proc/thread-self/net/route")
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            [f[0], f[1], f[2], f[3], f[7]].map(str::to_owned)
        })
        .collect()
}

fn hex_le(ip: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_le_bytes(ip.octets()))
}

#[test]
fn interface_gets_address_netmask_mtu_and_default_route() {
    in_new_netns(|| {
        // The NIC appears a little later, as when virtio_net is still probing.
        let mut late = Command::new("sh")
            .args(["-c", "sleep 0.3; ip tuntap add eth0 mode tap"])
            .spawn()
            .unwrap();
        let mut setup = NetSetup::parse("10.77.0.2/24,10.77.0.1").unwrap();
        setup.mtu = 1400;
        let t = Instant::now();
        configure_network(&setup).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200), "waited for eth0");
        assert!(late.wait().unwrap().success());

        let addr = run("ip -4 -o addr show dev eth0");
        assert!(addr.contains("inet 10.77.0.2/24"), "{addr}");
        let link = run("ip -o link show dev eth0");
        assert!(link.contains("mtu 1400"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        let lo = run("ip -o link show dev lo");
        assert!(lo.contains(",UP"), "{lo}");
        let lo_addr = run("ip -4 -o addr show dev lo");
        assert!(lo_addr.contains("inet 127.0.0.1/8"), "{lo_addr}");

        let r = routes();
        let gw = hex_le(Ipv4Addr::new(10, 77, 0, 1));
        assert!(
            r.iter().any(|[i, d, g, f, m]| i == "eth0"
                && d == "00000000"
                && *g == gw
                && f == "0003"
                && m == "00000000"),
            "default route via 10.77.0.1: {r:?}"
        );
        let net = hex_le(Ipv4Addr::new(10, 77, 0, 0));
        let mask = hex_le(Ipv4Addr::new(255, 255, 255, 0));
        assert!(
            r.iter()
                .any(|[i, d, _, _, m]| i == "eth0" && *d == net && *m == mask),
            "on-link route: {r:?}"
        );

        // Running again (agent restart) is fine.
        configure_network(&setup).unwrap();
        assert_eq!(routes().len(), r.len());
    });
}

#[test]
fn other_interface_names_and_no_gateway() {
    in_new_netns(|| {
        run("ip tuntap add ens5 mode tap");
        let mut setup = NetSetup::parse("192.168.7.9/16").unwrap();
        setup.iface = "ens5".into();
        configure_network(&setup).unwrap();
        let addr = run("ip -4 -o addr show dev ens5");
        assert!(addr.contains("inet 192.168.7.9/16"), "{addr}");
        let link = run("ip -o link show dev ens5");
        assert!(link.contains("mtu 1500"), "{link}");
        assert!(
            !routes().iter().any(|[_, d, _, _, _]| d == "00000000"),
            "no default route without a gateway"
        );
    });
}

#[test]
fn missing_interface_is_a_clear_error() {
    let err = in_new_netns(|| {
        let mut setup = NetSetup::parse("10.77.0.2/24,10.77.0.1").unwrap();
        setup.wait = Duration::from_millis(200);
        let t = Instant::now();
        let err = configure_network(&setup).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(5));
        err
    });
    assert!(matches!(err, Error::NoInterface { ref iface, .. } if iface == "eth0"));
    let msg = err.to_string();
    assert!(
        msg.contains("eth0") && msg.contains("did not appear"),
        "{msg}"
    );
}

#[test]
fn resolv_conf_is_replaced_even_through_a_symlink() {
    let dir = TempDir::new("resolv");
    let etc = dir.0.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::os::unix::fs::symlink(
        "/run/systemd/resolve/stub-resolv.conf",
        etc.join("resolv.conf"),
    )
    .unwrap();
    write_resolv_conf(&dir.0, "10.77.0.1".parse().unwrap()).unwrap();
    let p = etc.join("resolv.conf");
    assert!(!p.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "nameserver 10.77.0.1\n"
    );
    // A fresh root without /etc.
    let bare = TempDir::new("resolv-bare");
    write_resolv_conf(&bare.0, "fd00::1".parse().unwrap()).unwrap();
    assert_eq!(
        std::fs::read_to_string(bare.0.join("etc/resolv.conf")).unwrap(),
        "nameserver fd00::1\n"
    );
}

fn env_of(env: &[(OsString, OsString)], k: &str) -> String {
    let v: Vec<_> = env.iter().filter(|(ek, _)| ek == k).collect();
    assert_eq!(v.len(), 1, "{k} once in {env:?}");
    v[0].1.clone().into_string().unwrap()
}

#[test]
fn ca_goes_into_the_bundle_once_and_the_environment() {
    let dir = TempDir::new("ca");
    let bundle = dir.0.join(CA_BUNDLE_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    // A bundle whose last line has no newline.
    let existing = "-----BEGIN CERTIFICATE-----\nEXISTING\n-----END CERTIFICATE-----";
    std::fs::write(&bundle, existing).unwrap();

    let env = install_ca_cert(&dir.0, PEM.as_bytes()).unwrap();
    let cert = dir.0.join(CA_CERT_PATH.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), PEM);
    assert_eq!(
        std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let b = std::fs::read_to_string(&bundle).unwrap();
    assert_eq!(b, format!("{existing}\n{PEM}"));
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "CURL_CA_BUNDLE",
    ] {
        assert_eq!(env_of(&env, k), CA_BUNDLE_PATH, "{k}");
    }
    assert_eq!(env_of(&env, "NODE_EXTRA_CA_CERTS"), CA_CERT_PATH);

    // Again (a restarted sandbox on the same disk): the bundle does not grow.
    install_ca_cert(&dir.0, PEM.as_bytes()).unwrap();
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), b);
}

#[test]
fn ca_without_a_bundle_is_used_directly() {
    let dir = TempDir::new("ca-nobundle");
    // Surrounding whitespace is tolerated.
    let env = install_ca_cert(&dir.0, format!("\n\n{PEM}\n\n").as_bytes()).unwrap();
    assert!(!dir.0.join(CA_BUNDLE_PATH.trim_start_matches('/')).exists());
    assert_eq!(
        std::fs::read_to_string(dir.0.join(CA_CERT_PATH.trim_start_matches('/'))).unwrap(),
        PEM
    );
    for k in sbx_guest::CA_ENV_VARS {
        assert_eq!(env_of(&env, k), CA_CERT_PATH, "{k}");
    }
    for bad in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE-----\nabc\n",
        "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----",
    ] {
        assert!(matches!(
            install_ca_cert(&dir.0, bad.as_bytes()),
            Err(Error::BadCertificate)
        ));
    }
}

/// A named network namespace with a TAP `eth0`, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> Self {
        let name = format!("sbx-guest-test-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&format!(
            "ip netns add {name} && ip -n {name} tuntap add eth0 mode tap"
        ));
        Self(name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn agent_flags_set_up_network_resolver_and_trust_store() {
    let ns = NetNs::new();
    let bundle = "-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n";
    let sb = Sandbox::start_with(Opts {
        args: &[
            "--net",
            "10.77.0.2/24,10.77.0.1",
            "--nameserver",
            "10.77.0.1",
            "--ca-cert",
            "/ca.pem",
            "--env",
            "CURL_CA_BUNDLE=/explicit",
        ],
        netns: Some(&ns.0),
        files: &[
            ("/ca.pem", PEM.as_bytes()),
            (CA_BUNDLE_PATH, bundle.as_bytes()),
        ],
        ..Opts::default()
    });
    let out = sb
        .client
        .output(ExecRequest::new([
            "sh",
            "-c",
            "cat /etc/resolv.conf; cat /proc/net/route; env; cat /etc/ssl/certs/ca-certificates.crt",
        ]))
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("nameserver 10.77.0.1\n"), "{text}");
    let gw = hex_le(Ipv4Addr::new(10, 77, 0, 1));
    assert!(
        text.lines()
            .any(|l| l.starts_with("eth0\t00000000\t") && l.contains(&gw)),
        "default route: {text}"
    );
    assert!(
        text.contains(&format!("SSL_CERT_FILE={CA_BUNDLE_PATH}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("NODE_EXTRA_CA_CERTS={CA_CERT_PATH}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("GIT_SSL_CAINFO={CA_BUNDLE_PATH}\n")),
        "{text}"
    );
    // An explicit --env wins over the CA defaults.
    assert!(text.contains("CURL_CA_BUNDLE=/explicit\n"), "{text}");
    assert!(
        text.contains(&format!("{bundle}{PEM}")),
        "bundle extended: {text}"
    );
}
