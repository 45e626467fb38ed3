#![deny(unsafe_code)]
//! # sbx-net: the sandbox egress firewall
//!
//! A default-deny egress proxy for AI-agent sandboxes: what a sandbox may reach, and how real
//! credentials reach upstream APIs without ever entering the sandbox.
//!
//! - [`Policy`]: presets (`allow-all`, `balanced`, `deny-all`), global and per-sandbox
//!   `allow` / `deny` / `bypass` rules over [`Resource`]s (`example.com`, `*.example.com`,
//!   `**`, `host:port`, `IP`, `IP:port`, CIDR). Deny beats allow. Every [`Decision`] names
//!   the rule and a [`Reason`]. Serializable (JSON) so a CLI can persist it; swappable on a
//!   running [`Proxy`] atomically ([`Proxy::set_policy`], [`Proxy::update_policy_json`],
//!   which keeps the old policy when the new one does not parse).
//! - [`Proxy`]: an HTTP proxy on hyper 1 + tokio-rustls. `CONNECT` tunnels are either
//!   intercepted (`forward`: TLS terminated with a leaf minted by the per-proxy
//!   [`CertificateAuthority`], HTTP/1.1 or HTTP/2 by ALPN on each leg independently,
//!   WebSocket upgrades passed through) or spliced (`forward-bypass`, for clients that pin
//!   certificates). Absolute-form `http://` requests are forwarded in cleartext, never
//!   injected.
//! - Credentials: a [`CredentialProvider`] (name to [`secrecy::SecretString`]) and
//!   [`Credential`] bindings (name, [`Sentinel`], hosts). The sandbox only ever sees the
//!   sentinel.
//! - Entry points for a userspace network stack, on a listener-less [`Proxy::new`]:
//!   [`Proxy::serve_connection`] (the explicit proxy over any stream),
//!   [`Proxy::serve_transparent`] (direct TLS/HTTP connections, named by SNI or `Host`, which
//!   must match what the guest resolved through [`Proxy::resolve_for_guest`]; spliced, never
//!   injected), [`Proxy::serve_network`] (other TCP, `IP`/CIDR rules only) and
//!   [`Proxy::log_blocked_network`] (rate-limited records of what the stack drops).
//! - [`PolicyLog`]: one [`LogRecord`] per HTTP request, tunnel, flow or guest DNS query;
//!   [`JsonLinesLog`] is a durable sink another process can read while the proxy writes.
//! - [`NetStack`]: the userspace TCP/IP stack (smoltcp) that feeds those entry points from a
//!   guest's Ethernet frames on a TAP or `SOCK_SEQPACKET` fd: gateway ARP and DNS, one flow
//!   per guest TCP connection handed to a [`FlowHandler`] (which [`Proxy`] implements),
//!   everything else dropped and logged. Configured by [`StackConfig`].
//!
//! The crate never builds a tokio runtime: call [`Proxy::bind`] from inside the caller's
//! runtime. rustls and rcgen use the *ring* provider.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use sbx_net::*;
//! use secrecy::SecretString;
//!
//! # async fn run() -> sbx_net::Result<()> {
//! let mut policy = Policy::new(Preset::DenyAll);
//! policy.allow(&Scope::Global, "api.github.com")?;
//! policy.bypass(&Scope::Sandbox("pinned".into()), "*.pinned.example")?;
//!
//! let sentinel = Sentinel::github(); // gho_ + 36 alphanumerics: give this to the sandbox
//! let mut store = StaticCredentials::new();
//! store.insert("github", SecretString::from(std::env::var("GH_TOKEN").unwrap_or_default()));
//!
//! let ca = Arc::new(CertificateAuthority::load_or_create("/var/lib/sbx/ca".as_ref())?);
//! let config = ProxyConfig::new(ca)
//!     .with_sandbox("my-sandbox")
//!     .with_policy(policy)
//!     .with_credential(Credential::new("github", sentinel, &["api.github.com"])?)
//!     .with_provider(Arc::new(store))
//!     .with_log(Arc::new(JsonLinesLog::open("/var/lib/sbx/policy.jsonl")?));
//! let proxy = Proxy::bind("127.0.0.1:0".parse().unwrap(), config).await?;
//! println!("HTTPS_PROXY=http://{}", proxy.local_addr());
//! # Ok(()) }
//! ```
//!
//! ## Threat model
//!
//! The sandboxed agent is assumed hostile: it may send arbitrary bytes to the proxy, control
//! DNS answers of names it is allowed to reach (rebinding), run a server at an allowed host
//! that answers anything (including redirects and reflected headers), and try to get a real
//! secret out. The host, the policy, the CA key, the credential provider and resolver
//! overrides are trusted.
//!
//! What the proxy guarantees:
//! - **Default deny, deny wins.** Names are normalised (case, trailing dot, IDNA to
//!   punycode, every IPv4 spelling URL parsers accept such as `0x7f000001`, `2130706433`,
//!   `127.1`, `[::ffff:127.0.0.1]`) before matching, in rules and in requests alike;
//!   malformed rules are rejected when added.
//! - **The destination is the CONNECT authority or the absolute URI.** TLS SNI, `Host` and
//!   HTTP/2 `:authority` (checked per request and per stream) that disagree are refused
//!   (handshake aborted, or `421`) and logged. This closes the gap where a MITM proxy mints
//!   a leaf from SNI but routes by the CONNECT host, or routes HTTP/2 streams by
//!   `:authority`.
//! - **No SSRF through the proxy.** A name is resolved once per tunnel (or cleartext
//!   request); every address in the answer is classified, and the answer is refused if any
//!   address is loopback, link-local, cloud metadata, private, CGNAT, multicast,
//!   unspecified, reserved or an IPv6 form embedding IPv4, unless an `IP`/CIDR rule names it.
//!   The proxy connects only to the addresses it checked (no second lookup to rebind), and
//!   never to its own listener. Resolver overrides are trusted configuration.
//! - **Upstream TLS is verified** against the system roots (or the bundled Mozilla roots
//!   when the system has none) plus configured extra roots. Failure answers `502` and
//!   nothing of the request is sent.
//! - **Secrets never enter the sandbox.** Sentinels are replaced by secrets only on the
//!   `forward` (intercepted TLS) path, only in header values (including inside
//!   `Authorization: Basic`) of requests to hosts the credential is bound to, and only where
//!   the sentinel appears (a real token the client sent is untouched). A sentinel in the
//!   headers or request target of a request to any other host is blocked and logged as
//!   `credential-exfiltration`. Never on cleartext or bypass. The proxy does not follow
//!   redirects, so a secret is never carried to a redirect target; response headers that
//!   echo a secret get the sentinel put back. Secrets are [`secrecy::SecretString`] end to
//!   end, exposed only at the injection point, copies are zeroized, injected header values
//!   are marked sensitive, and no `Debug`, error or log line carries a value.
//! - **Framing is strict.** An HTTP/1 guard in front of hyper rejects bare `LF`,
//!   `Content-Length` with `Transfer-Encoding`, duplicate `Content-Length` and
//!   non-`chunked` transfer codings with `400` before anything is forwarded; a `CONNECT` or
//!   `Upgrade` request that is not switched closes the connection, so nothing pipelined
//!   behind it is parsed leniently; requests are re-serialised upstream, so upstream framing
//!   never follows the client's bytes.
//! - **Bounded resources.** Connection cap, request-head size, header read, TLS handshake,
//!   connect and idle timeouts, and an HTTP/2 stream cap ([`Limits`]).
//!
//! Out of scope / known limits: request and response *bodies* are not scanned for sentinels
//! (a sentinel in a body to an unbound host is not detected; a secret reflected in a
//! response body by a bound host reaches the sandbox); `forward-bypass` tunnels are opaque
//! by design (only SNI is checked); a malformed chunk line in the middle of a request body
//! aborts the request (the head was already forwarded) instead of answering `400`;
//! `transparent` TLS flows are spliced, not terminated: a client may send a different name
//! inside the encrypted session (domain fronting) to a server at an address it may reach
//! (cleartext `transparent` connections are checked request by request).

mod ca;
mod credentials;
mod error;
mod log;
mod policy;
mod proxy;
mod stack;

pub use ca::CertificateAuthority;
pub use credentials::{Credential, CredentialProvider, Sentinel, StaticCredentials};
pub use error::{Error, Result};
pub use log::{JsonLinesLog, LogRecord, MemoryLog, NoLog, PolicyLog, ProxyKind, RecordType};
pub use policy::*;
pub use proxy::*;
pub use stack::*;
