//! Rust target agent: executes socket calls on command, see targets/PROTOCOL.md.
//!
//! It uses std::net (TcpListener, TcpStream, UdpSocket) the way a Rust program would and
//! reports what it returned. No test logic lives here.
//!
//! std::net creates, binds and listens or connects in one call, so like the Go agent a
//! `socket` handle holds no OS socket at first and a TCP `bind` is recorded (`deferred=1`):
//! - `listen`: `TcpListener::bind(addr)` (std: SO_REUSEADDR, then listen(128) on Linux), so
//!   `listen H default` shows std's real default. A numeric backlog calls listen(2) again
//!   through socket2 (`SockRef::listen`), as the Go agent does: std has no backlog parameter.
//! - `connect`: `TcpStream::connect` / `TcpStream::connect_timeout` (`MS`); UDP:
//!   `UdpSocket::bind` then `UdpSocket::connect`.
//! - `accept`, `recv`, `send`, `shutdown`, `getsockname`, `getpeername`, `nonblock`, `close`:
//!   std's methods on the std object.
//!
//! The socket2 crate is used ONLY where std cannot express the operation:
//! - a socket that must exist before bind/listen/connect (`Socket::new`): when the harness
//!   sets or reads an option on a fresh handle, or calls accept/getsockname/... on a socket
//!   that was only bound, or connects a bound socket (std cannot bind a client). Such a
//!   socket becomes a std TcpListener/TcpStream/UdpSocket when it listens or connects.
//!   `listen H default` on it uses std's backlog, 128 (the reply's msg says so).
//! - a numeric backlog (`SockRef::listen`, as above);
//! - SO_REUSEADDR and SO_LINGER (std has no setter/getter; `TcpStream::set_linger` is
//!   unstable), TCP_USER_TIMEOUT, and reading the non-blocking mode (std can only set it);
//! - the accept timeout (`MS`): SO_RCVTIMEO on the listener (`SockRef::set_read_timeout`;
//!   Linux's accept honours it), since std's TcpListener has no accept timeout;
//! - calls std has only on another type: shutdown of a UDP socket or a listener; send, recv,
//!   peer_addr on a listener or on a socket that never connected; accept on a socket that does
//!   not listen; bind of a socket that exists: they give the kernel's errno (EINVAL, ENOTCONN...).
//!
//! TCP_SYNCNT is `unsupported`: neither std::net nor socket2 exposes it (only a raw
//! setsockopt through libc would, which this agent does not fake).
//! A read (or accept) timeout surfaces in std as EAGAIN (WouldBlock); it is the operation's
//! own timeout and answered `timeout`, as is connect_timeout's TimedOut (which has no errno).
//!
//! Build (static, glibc): RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --offline
//! --locked --target x86_64-unknown-linux-gnu (after `cargo fetch --locked` once).

use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const MAX_LINE: usize = 4096; // bytes in a command line, its newline not counted
const MAX_RECV: i64 = 1 << 20;
const INT_MAX: i64 = (1 << 31) - 1;
/// std's TcpListener::bind backlog on Linux (library/std/src/sys/net/connection/socket.rs).
const STD_BACKLOG: i32 = 128;
const EAGAIN: i32 = 11;
const EINPROGRESS: i32 = 115;

/// errno names as glibc's strerrorname_np gives them (Linux x86_64), index = errno.
#[rustfmt::skip]
const ERRNO_NAMES: [&str; 134] = [
    "", "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD", "EAGAIN",
    "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV", "ENOTDIR", "EISDIR",
    "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC", "ESPIPE", "EROFS", "EMLINK",
    "EPIPE", "EDOM", "ERANGE", "EDEADLK", "ENAMETOOLONG", "ENOLCK", "ENOSYS", "ENOTEMPTY", "ELOOP", "",
    "ENOMSG", "EIDRM", "ECHRNG", "EL2NSYNC", "EL3HLT", "EL3RST", "ELNRNG", "EUNATCH", "ENOCSI", "EL2HLT",
    "EBADE", "EBADR", "EXFULL", "ENOANO", "EBADRQC", "EBADSLT", "", "EBFONT", "ENOSTR", "ENODATA", "ETIME",
    "ENOSR", "ENONET", "ENOPKG", "EREMOTE", "ENOLINK", "EADV", "ESRMNT", "ECOMM", "EPROTO", "EMULTIHOP",
    "EDOTDOT", "EBADMSG", "EOVERFLOW", "ENOTUNIQ", "EBADFD", "EREMCHG", "ELIBACC", "ELIBBAD", "ELIBSCN",
    "ELIBMAX", "ELIBEXEC", "EILSEQ", "ERESTART", "ESTRPIPE", "EUSERS", "ENOTSOCK", "EDESTADDRREQ", "EMSGSIZE",
    "EPROTOTYPE", "ENOPROTOOPT", "EPROTONOSUPPORT", "ESOCKTNOSUPPORT", "EOPNOTSUPP", "EPFNOSUPPORT",
    "EAFNOSUPPORT", "EADDRINUSE", "EADDRNOTAVAIL", "ENETDOWN", "ENETUNREACH", "ENETRESET", "ECONNABORTED",
    "ECONNRESET", "ENOBUFS", "EISCONN", "ENOTCONN", "ESHUTDOWN", "ETOOMANYREFS", "ETIMEDOUT", "ECONNREFUSED",
    "EHOSTDOWN", "EHOSTUNREACH", "EALREADY", "EINPROGRESS", "ESTALE", "EUCLEAN", "ENOTNAM", "ENAVAIL",
    "EISNAM", "EREMOTEIO", "EDQUOT", "ENOMEDIUM", "EMEDIUMTYPE", "ECANCELED", "ENOKEY", "EKEYEXPIRED",
    "EKEYREVOKED", "EKEYREJECTED", "EOWNERDEAD", "ENOTRECOVERABLE", "ERFKILL", "EHWPOISON",
];

/// How an error of the call may be the operation's own timeout (`MS`).
#[derive(Clone, Copy, PartialEq)]
enum Timed {
    No,
    /// SO_RCVTIMEO (std's set_read_timeout, socket2's for accept): EAGAIN is the timeout.
    RcvTimeo,
    /// connect_timeout's poll: ErrorKind::TimedOut with no errno is the timeout.
    Poll,
}

enum Fail {
    Proto(&'static str, String),
    Unsupported(String),
    Io(io::Error, Timed),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e, Timed::No)
    }
}

fn badarg(msg: String) -> Fail {
    Fail::Proto("badarg", msg)
}

fn err_name(e: &io::Error, timed: Timed) -> &'static str {
    match e.raw_os_error() {
        Some(EAGAIN) if timed == Timed::RcvTimeo => "timeout",
        Some(n) => match usize::try_from(n).ok().and_then(|i| ERRNO_NAMES.get(i)) {
            Some(name) if !name.is_empty() => name,
            _ => "noerrno",
        },
        None if timed == Timed::Poll && e.kind() == io::ErrorKind::TimedOut => "timeout",
        None => "noerrno",
    }
}

type Fields = Vec<(&'static str, String)>;
type OpResult = Result<Fields, Fail>;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tcp,
    Udp,
}

enum Obj {
    /// No OS socket yet (std creates it when it binds, listens or connects).
    Pending,
    /// A TCP socket socket2 created before bind/listen/connect.
    Raw(Socket),
    Listener(TcpListener),
    Stream(TcpStream),
    Udp(UdpSocket),
}

struct Sock {
    kind: Kind,
    v6: bool,
    bind: Option<SocketAddr>, // a TCP bind recorded for listen/connect
    obj: Obj,
}

impl Sock {
    fn unspecified(&self) -> SocketAddr {
        let ip = if self.v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        SocketAddr::new(ip, 0)
    }

    /// The OS socket, if it exists.
    fn fd(&self) -> Option<SockRef<'_>> {
        match &self.obj {
            Obj::Pending => None,
            Obj::Raw(s) => Some(SockRef::from(s)),
            Obj::Listener(l) => Some(SockRef::from(l)),
            Obj::Stream(s) => Some(SockRef::from(s)),
            Obj::Udp(u) => Some(SockRef::from(u)),
        }
    }

    /// Create the OS socket with socket2 where std has none yet (and make the recorded bind):
    /// the operation needs a socket before bind/listen/connect, which std cannot express.
    fn materialize(&mut self) -> io::Result<()> {
        if !matches!(self.obj, Obj::Pending) {
            return Ok(());
        }
        let domain = if self.v6 { Domain::IPV6 } else { Domain::IPV4 };
        let ty = if self.kind == Kind::Tcp {
            Type::STREAM
        } else {
            Type::DGRAM
        };
        let s = Socket::new(domain, ty, None)?;
        if let Some(addr) = self.bind {
            s.bind(&SockAddr::from(addr))?; // on failure the socket is dropped, the handle stays as it was
        }
        self.obj = match self.kind {
            Kind::Tcp => Obj::Raw(s),
            Kind::Udp => Obj::Udp(UdpSocket::from(s)),
        };
        Ok(())
    }

    /// The OS socket, created (socket2) if need be.
    fn sockref(&mut self) -> io::Result<SockRef<'_>> {
        self.materialize()?;
        Ok(self.fd().expect("materialized"))
    }

    /// A socket2 socket becomes the std object it now is (a listener, a connected stream).
    fn promote(&mut self, to: impl FnOnce(Socket) -> Obj) {
        self.obj = match std::mem::replace(&mut self.obj, Obj::Pending) {
            Obj::Raw(r) => to(r),
            other => other,
        };
    }

    /// Whether the socket is in non-blocking mode (false when none exists yet).
    fn nonblocking(&self) -> bool {
        self.fd().is_some_and(|r| r.nonblocking().unwrap_or(false))
    }
}

thread_local! {
    static US: std::cell::Cell<u128> = const { std::cell::Cell::new(0) };
}

/// Run the socket call(s) of an operation and record their elapsed time.
fn timed<T>(f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    US.with(|us| us.set(start.elapsed().as_micros()));
    r
}

/// A decimal integer as Python's int(text, 10) reads it (optional sign, single underscores
/// between digits), within [low, high].
fn number(text: &str, low: i64, high: i64) -> Result<i64, Fail> {
    let digits = text.trim_start_matches(['+', '-']);
    let signs = text.len() - digits.len();
    let b = digits.as_bytes();
    let ok = signs <= 1
        && !b.is_empty()
        && b[0] != b'_'
        && b[b.len() - 1] != b'_'
        && !digits.contains("__")
        && b.iter().all(|c| c.is_ascii_digit() || *c == b'_');
    if !ok {
        return Err(badarg(format!("not a number: {text}")));
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let clean = clean.trim_start_matches('0');
    let value = if clean.len() > 12 {
        None
    } else {
        Some(clean.parse::<i64>().unwrap_or(0))
    };
    let value = value.map(|v| if text.starts_with('-') { -v } else { v });
    match value {
        Some(v) if low <= v && v <= high => Ok(v),
        _ => Err(badarg(format!("out of range: {text}"))),
    }
}

/// MS: None for `none`.
fn timeout_arg(text: &str) -> Result<Option<Duration>, Fail> {
    if text == "none" {
        return Ok(None);
    }
    Ok(Some(Duration::from_millis(number(text, 1, INT_MAX)? as u64)))
}

fn unhex(text: &str) -> Result<Vec<u8>, Fail> {
    if text == "-" {
        return Ok(Vec::new());
    }
    let b = text.as_bytes();
    if b.len() % 2 != 0 || !b.iter().all(u8::is_ascii_hexdigit) {
        return Err(badarg("bad hex".into()));
    }
    Ok(b.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect())
}

fn hex(data: &[u8]) -> String {
    if data.is_empty() {
        return "-".into();
    }
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// ADDR then PORT, for a socket of s's family.
fn sockaddr(s: &Sock, addr: &str, port: &str) -> Result<SocketAddr, Fail> {
    let ip: IpAddr = addr.parse().map_err(|_| badarg(format!("bad address {addr}")))?;
    if ip.is_ipv6() != s.v6 {
        return Err(badarg(format!("bad address {addr}")));
    }
    let port = number(port, 0, 65535)?;
    Ok(SocketAddr::new(ip, port as u16))
}

fn addr_fields(addr: SocketAddr) -> Fields {
    let text = match addr {
        SocketAddr::V6(a) if a.scope_id() != 0 => format!("{}%{}", a.ip(), a.scope_id()),
        a => a.ip().to_string(),
    };
    vec![("addr", text), ("port", addr.port().to_string())]
}

fn inet(addr: SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket().ok_or_else(|| io::Error::other("not an inet address"))
}

/// Percent-encode every byte outside A-Z a-z 0-9 - . _ ~ : /
fn pct(text: &str) -> String {
    let mut out = String::new();
    for &c in text.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~:/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

const OPTIONS: [(&str, usize); 5] = [
    ("reuseaddr", 1),
    ("linger", 2),
    ("syncnt", 1),
    ("user_timeout", 1),
    ("nonblock", 1),
];
const NO_SYNCNT: &str = "neither std::net nor socket2 exposes TCP_SYNCNT (only a raw setsockopt through libc would)";

struct Agent {
    socks: HashMap<i64, Sock>,
    next: i64,
}

impl Agent {
    fn handle(&mut self, text: &str) -> Result<i64, Fail> {
        let h = number(text, 0, INT_MAX)?;
        if !self.socks.contains_key(&h) {
            return Err(Fail::Proto("badhandle", format!("no handle {text}")));
        }
        Ok(h)
    }

    fn sock(&mut self, h: i64) -> &mut Sock {
        self.socks.get_mut(&h).expect("checked handle")
    }

    fn add(&mut self, s: Sock) -> Fields {
        self.next += 1;
        self.socks.insert(self.next, s);
        vec![("h", self.next.to_string())]
    }

    fn op_socket(&mut self, a: &[&str]) -> OpResult {
        let kind = match a[0] {
            "tcp" => Kind::Tcp,
            "udp" => Kind::Udp,
            k => return Err(badarg(format!("unknown keyword {k}"))),
        };
        let v6 = match a[1] {
            "inet" => false,
            "inet6" => true,
            f => return Err(badarg(format!("unknown keyword {f}"))),
        };
        Ok(self.add(Sock {
            kind,
            v6,
            bind: None,
            obj: Obj::Pending,
        }))
    }

    fn option(name: &str) -> Result<usize, Fail> {
        OPTIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| badarg(format!("unknown option {name}")))
    }

    fn op_setsockopt(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let (name, values) = (a[1], &a[2..]);
        let want = Self::option(name)?;
        if values.len() != want {
            return Err(Fail::Proto("badline", format!("{name} takes {want} value(s)")));
        }
        let v = values
            .iter()
            .map(|t| number(t, 0, INT_MAX))
            .collect::<Result<Vec<_>, _>>()?;
        if name == "syncnt" {
            return Err(Fail::Unsupported(NO_SYNCNT.into()));
        }
        let s = self.sock(h);
        timed(|| -> io::Result<()> {
            if name == "nonblock" {
                s.materialize()?;
                let on = v[0] != 0;
                return match &s.obj {
                    Obj::Listener(l) => l.set_nonblocking(on),
                    Obj::Stream(t) => t.set_nonblocking(on),
                    Obj::Udp(u) => u.set_nonblocking(on),
                    Obj::Raw(r) => r.set_nonblocking(on),
                    Obj::Pending => unreachable!(),
                };
            }
            let r = s.sockref()?;
            match name {
                "reuseaddr" => r.set_reuse_address(v[0] != 0),
                "linger" => r.set_linger((v[0] != 0).then(|| Duration::from_secs(v[1] as u64))),
                _ => r.set_tcp_user_timeout((v[0] != 0).then(|| Duration::from_millis(v[0] as u64))),
            }
        })?;
        Ok(vec![])
    }

    fn op_getsockopt(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let name = a[1];
        Self::option(name)?;
        if name == "syncnt" {
            return Err(Fail::Unsupported(NO_SYNCNT.into()));
        }
        let s = self.sock(h);
        let value = timed(|| -> io::Result<String> {
            let r = s.sockref()?;
            Ok(match name {
                "reuseaddr" => (r.reuse_address()? as u8).to_string(),
                "linger" => match r.linger()? {
                    Some(d) => format!("1,{}", d.as_secs()),
                    None => "0,0".into(),
                },
                "user_timeout" => r.tcp_user_timeout()?.map_or(0, |d| d.as_millis()).to_string(),
                _ => (r.nonblocking()? as u8).to_string(),
            })
        })?;
        Ok(vec![("value", value)])
    }

    fn op_bind(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let addr = sockaddr(self.sock(h), a[1], a[2])?;
        let s = self.sock(h);
        match (&s.obj, s.kind) {
            (Obj::Pending, Kind::Tcp) => {
                s.bind = Some(addr); // std binds in TcpListener::bind / TcpStream::connect
                Ok(vec![("deferred", "1".into())])
            }
            (Obj::Pending, Kind::Udp) => {
                let u = timed(|| UdpSocket::bind(addr))?;
                s.obj = Obj::Udp(u);
                Ok(vec![])
            }
            _ => {
                // std binds only a socket it creates: socket2 on the existing one
                timed(|| s.fd().expect("exists").bind(&addr.into()))?;
                Ok(vec![])
            }
        }
    }

    fn op_listen(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let backlog = match a[1] {
            "default" => None,
            t => Some(number(t, 0, INT_MAX)? as i32),
        };
        let s = self.sock(h);
        if let (Obj::Pending, Kind::Tcp) = (&s.obj, s.kind) {
            let addr = s.bind.unwrap_or_else(|| s.unspecified());
            let l = timed(|| -> io::Result<TcpListener> {
                let l = TcpListener::bind(addr)?; // std: SO_REUSEADDR, bind, listen(128)
                if let Some(n) = backlog {
                    SockRef::from(&l).listen(n)?; // std has no backlog parameter: listen(2) again
                }
                Ok(l)
            })?;
            s.obj = Obj::Listener(l);
            return Ok(vec![]);
        }
        // A socket that exists already (socket2): std cannot listen on it.
        timed(|| s.sockref()?.listen(backlog.unwrap_or(STD_BACKLOG)))?;
        s.promote(|r| Obj::Listener(TcpListener::from(r)));
        let mut fields = vec![];
        if backlog.is_none() {
            let msg = format!(
                "socket2 listen({STD_BACKLOG}), the backlog of std's TcpListener::bind: the socket existed before listen"
            );
            fields.push(("msg", pct(&msg)));
        }
        Ok(fields)
    }

    fn op_accept(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let ms = timeout_arg(a[1])?;
        let s = self.sock(h);
        let timed_by = if ms.is_some() && !s.nonblocking() {
            Timed::RcvTimeo
        } else {
            Timed::No
        };
        let v6 = s.v6;
        let got = timed(|| -> io::Result<(TcpStream, SocketAddr)> {
            s.materialize()?;
            let r = s.fd().expect("exists");
            if !r.nonblocking()? {
                r.set_read_timeout(ms)?; // SO_RCVTIMEO bounds accept(2) on Linux; set anew at every call
            }
            match &s.obj {
                Obj::Listener(l) => l.accept(),
                _ => {
                    // no std listener: socket2's accept on what exists (the kernel's EINVAL, ...)
                    let (c, addr) = r.accept()?;
                    Ok((TcpStream::from(c), inet(addr)?))
                }
            }
        });
        let (stream, peer) = got.map_err(|e| Fail::Io(e, timed_by))?;
        let mut fields = self.add(Sock {
            kind: Kind::Tcp,
            v6,
            bind: None,
            obj: Obj::Stream(stream),
        });
        fields.extend(addr_fields(peer));
        Ok(fields)
    }

    fn op_connect(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let addr = sockaddr(self.sock(h), a[1], a[2])?;
        let ms = timeout_arg(a[3])?;
        let s = self.sock(h);
        match (&s.obj, s.kind) {
            (Obj::Pending, Kind::Tcp) if s.bind.is_none() => {
                let r = timed(|| match ms {
                    Some(d) => TcpStream::connect_timeout(&addr, d),
                    None => TcpStream::connect(addr),
                });
                s.obj = Obj::Stream(r.map_err(|e| Fail::Io(e, Timed::Poll))?);
                Ok(vec![])
            }
            (Obj::Pending, Kind::Udp) => {
                let unspecified = s.unspecified();
                let r = timed(|| -> io::Result<()> {
                    let u = UdpSocket::bind(unspecified)?;
                    let r = u.connect(addr);
                    s.obj = Obj::Udp(u);
                    r
                });
                r?;
                Ok(vec![])
            }
            (Obj::Udp(u), _) => {
                timed(|| u.connect(addr))?;
                Ok(vec![])
            }
            _ => {
                // A socket that exists, or a bound client (std cannot bind before connect): socket2.
                let r = timed(|| -> io::Result<()> {
                    let r = s.sockref()?;
                    match ms {
                        Some(d) if !r.nonblocking()? => r.connect_timeout(&addr.into(), d),
                        _ => r.connect(&addr.into()),
                    }
                });
                let underway = match &r {
                    Ok(()) => true,
                    Err(e) => e.raw_os_error() == Some(EINPROGRESS),
                };
                if underway {
                    s.promote(|raw| Obj::Stream(TcpStream::from(raw)));
                }
                r.map_err(|e| Fail::Io(e, Timed::Poll))?;
                Ok(vec![])
            }
        }
    }

    fn op_send(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let data = unhex(a[1])?;
        let s = self.sock(h);
        let n = timed(|| -> io::Result<usize> {
            s.materialize()?;
            match &s.obj {
                Obj::Stream(t) => (&*t).write(&data),
                Obj::Udp(u) => u.send(&data),
                _ => s.fd().expect("exists").send(&data),
            }
        })?;
        Ok(vec![("n", n.to_string())])
    }

    fn op_recv(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let size = number(a[1], 1, MAX_RECV)? as usize;
        let ms = timeout_arg(a[2])?;
        let s = self.sock(h);
        let timed_by = if ms.is_some() && !s.nonblocking() {
            Timed::RcvTimeo
        } else {
            Timed::No
        };
        let mut buf = vec![0u8; size];
        let got = timed(|| -> io::Result<(usize, Option<SocketAddr>)> {
            s.materialize()?;
            let blocking = !s.nonblocking();
            match &s.obj {
                Obj::Stream(t) => {
                    if blocking {
                        t.set_read_timeout(ms)?;
                    }
                    Ok(((&*t).read(&mut buf)?, None))
                }
                Obj::Udp(u) => {
                    if blocking {
                        u.set_read_timeout(ms)?;
                    }
                    let (n, from) = u.recv_from(&mut buf)?;
                    Ok((n, Some(from)))
                }
                _ => {
                    let r = s.fd().expect("exists");
                    if blocking {
                        r.set_read_timeout(ms)?;
                    }
                    Ok(((&*r).read(&mut buf)?, None))
                }
            }
        });
        let (n, from) = got.map_err(|e| Fail::Io(e, timed_by))?;
        let mut fields = vec![("n", n.to_string()), ("data", hex(&buf[..n]))];
        if let Some(from) = from {
            fields.extend(addr_fields(from));
        }
        Ok(fields)
    }

    fn op_shutdown(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let how = match a[1] {
            "rd" => Shutdown::Read,
            "wr" => Shutdown::Write,
            "rdwr" => Shutdown::Both,
            k => return Err(badarg(format!("unknown keyword {k}"))),
        };
        let s = self.sock(h);
        timed(|| -> io::Result<()> {
            s.materialize()?;
            match &s.obj {
                Obj::Stream(t) => t.shutdown(how),
                _ => s.fd().expect("exists").shutdown(how), // std has shutdown on TcpStream only
            }
        })?;
        Ok(vec![])
    }

    fn op_close(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let s = self.socks.remove(&h).expect("checked handle");
        timed(|| drop(s)); // std closes on drop
        Ok(vec![])
    }

    fn op_getsockname(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let s = self.sock(h);
        let addr = timed(|| -> io::Result<SocketAddr> {
            s.materialize()?;
            match &s.obj {
                Obj::Listener(l) => l.local_addr(),
                Obj::Stream(t) => t.local_addr(),
                Obj::Udp(u) => u.local_addr(),
                _ => inet(s.fd().expect("exists").local_addr()?),
            }
        })?;
        Ok(addr_fields(addr))
    }

    fn op_getpeername(&mut self, a: &[&str]) -> OpResult {
        let h = self.handle(a[0])?;
        let s = self.sock(h);
        let addr = timed(|| -> io::Result<SocketAddr> {
            s.materialize()?;
            match &s.obj {
                Obj::Stream(t) => t.peer_addr(),
                Obj::Udp(u) => u.peer_addr(),
                _ => inet(s.fd().expect("exists").peer_addr()?),
            }
        })?;
        Ok(addr_fields(addr))
    }

    fn execute(&mut self, line: &str) -> (String, bool) {
        let words: Vec<&str> = line.split(is_space).filter(|w| !w.is_empty()).collect();
        let Some(&cmd) = words.first() else {
            return (format!("proto badline msg={}", pct("empty line")), false);
        };
        type Op = fn(&mut Agent, &[&str]) -> OpResult;
        let (nargs, variadic, op): (usize, bool, Op) = match cmd {
            "socket" => (2, false, Agent::op_socket),
            "setsockopt" => (2, true, Agent::op_setsockopt),
            "getsockopt" => (2, false, Agent::op_getsockopt),
            "bind" => (3, false, Agent::op_bind),
            "listen" => (2, false, Agent::op_listen),
            "accept" => (2, false, Agent::op_accept),
            "connect" => (4, false, Agent::op_connect),
            "send" => (2, false, Agent::op_send),
            "recv" => (3, false, Agent::op_recv),
            "shutdown" => (2, false, Agent::op_shutdown),
            "close" => (1, false, Agent::op_close),
            "getsockname" => (1, false, Agent::op_getsockname),
            "getpeername" => (1, false, Agent::op_getpeername),
            "quit" => (0, false, |_, _| Ok(vec![])),
            _ => {
                return (
                    format!("proto badop msg={}", pct(&format!("unknown command {cmd}"))),
                    false,
                );
            }
        };
        let args = &words[1..];
        if args.len() < nargs || (args.len() > nargs && !variadic) {
            return (
                format!("proto badline msg={}", pct(&format!("{cmd} takes {nargs} argument(s)"))),
                false,
            );
        }
        US.with(|us| us.set(0));
        let result = op(self, args);
        let us = US.with(|us| us.get());
        match result {
            Ok(fields) => {
                let mut reply = format!("ok {us}");
                for (k, v) in fields {
                    reply += &format!(" {k}={v}");
                }
                (reply, cmd == "quit")
            }
            Err(Fail::Proto(code, msg)) => (format!("proto {code} msg={}", pct(&msg)), false),
            Err(Fail::Unsupported(msg)) => (format!("unsupported {us} msg={}", pct(&msg)), false),
            Err(Fail::Io(e, timed_by)) => (
                format!("err {} {us} msg={}", err_name(&e, timed_by), pct(&e.to_string())),
                false,
            ),
        }
    }
}

/// Python's str.split() on ASCII.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t'..='\r' | '\x1c'..='\x1f')
}

/// One line without its newline, and whether it was too long (more than MAX_LINE bytes); only
/// the start of a too long line is kept. None at end of input.
fn read_line(r: &mut impl BufRead) -> Option<(Vec<u8>, bool)> {
    let mut line = Vec::new();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if buf.is_empty() {
            return any.then_some((line, len > MAX_LINE));
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|&c| c == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if line.len() <= MAX_LINE {
            line.extend_from_slice(&chunk[..chunk.len().min(MAX_LINE + 1 - line.len())]);
        }
        len += chunk.len();
        r.consume(used);
        if done {
            return Some((line, len > MAX_LINE));
        }
    }
}

fn main() {
    let mut out = io::stdout().lock();
    let mut reply = |line: &str| {
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    };
    let version = format!(
        "{} std::net, socket2 {} where std has no call",
        env!("AGENT_RUSTC_VERSION"),
        env!("AGENT_SOCKET2_VERSION")
    );
    reply(&format!(
        "ready proto=1 lang=rust version={} pid={}",
        pct(&version),
        std::process::id()
    ));
    let mut agent = Agent {
        socks: HashMap::new(),
        next: 0,
    };
    let mut input = io::BufReader::with_capacity(MAX_LINE + 1, io::stdin().lock());
    while let Some((line, too_long)) = read_line(&mut input) {
        if !line.is_ascii() {
            reply(&format!("proto badline msg={}", pct("not ASCII")));
        } else if too_long {
            reply(&format!("proto badline msg={}", pct("line too long")));
        } else {
            let (r, quit) = agent.execute(std::str::from_utf8(&line).expect("ascii"));
            reply(&r);
            if quit {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_match_linux() {
        for (n, name) in [
            (11, "EAGAIN"),
            (22, "EINVAL"),
            (98, "EADDRINUSE"),
            (104, "ECONNRESET"),
            (110, "ETIMEDOUT"),
        ] {
            assert_eq!(err_name(&io::Error::from_raw_os_error(n), Timed::No), name);
        }
        assert_eq!(err_name(&io::Error::from_raw_os_error(111), Timed::No), "ECONNREFUSED");
        assert_eq!(err_name(&io::Error::from_raw_os_error(133), Timed::No), "EHWPOISON");
        assert_eq!(err_name(&io::Error::from_raw_os_error(41), Timed::No), "noerrno");
        assert_eq!(err_name(&io::Error::from_raw_os_error(11), Timed::RcvTimeo), "timeout");
        assert_eq!(
            err_name(&io::Error::from(io::ErrorKind::TimedOut), Timed::Poll),
            "timeout"
        );
        assert_eq!(
            err_name(&io::Error::from(io::ErrorKind::TimedOut), Timed::No),
            "noerrno"
        );
    }

    #[test]
    fn numbers_as_python_int_reads_them() {
        let ok = |t: &str| number(t, -10, INT_MAX).ok();
        assert_eq!(ok("1_000"), Some(1000));
        assert_eq!(ok("+5"), Some(5));
        assert_eq!(ok("-3"), Some(-3));
        assert_eq!(ok("007"), Some(7));
        for bad in [
            "",
            "_1",
            "1_",
            "1__0",
            "+-1",
            "x",
            "2147483648",
            "99999999999999999999",
            "-11",
        ] {
            assert!(ok(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn percent_encoding_and_hex() {
        assert_eq!(pct("a b%(c)/d:e~"), "a%20b%25%28c%29/d:e~");
        assert_eq!(hex(b""), "-");
        assert_eq!(unhex("68Ab").ok(), Some(vec![0x68, 0xab]));
        assert!(unhex("abc").is_err() && unhex("zz").is_err());
    }

    #[test]
    fn ipv4_mapped_addresses_in_mixed_form() {
        let a: SocketAddr = "[::ffff:198.51.100.2]:80".parse().unwrap();
        assert_eq!(addr_fields(a)[0].1, "::ffff:198.51.100.2");
        let b: SocketAddr = "[2001:db8:0:0:1:0:0:1]:80".parse().unwrap();
        assert_eq!(addr_fields(b)[0].1, "2001:db8::1:0:0:1");
    }

    #[test]
    fn line_limit_does_not_count_the_newline() {
        let limit = "x".repeat(MAX_LINE);
        let over = "x".repeat(MAX_LINE + 1);
        let input = format!("{limit}\n{over}\nlast");
        let mut r = io::BufReader::with_capacity(64, input.as_bytes());
        assert_eq!(
            read_line(&mut r).map(|(l, long)| (l.len(), long)),
            Some((MAX_LINE, false))
        );
        assert_eq!(read_line(&mut r).map(|(_, long)| long), Some(true));
        assert_eq!(read_line(&mut r), Some((b"last".to_vec(), false)));
        assert_eq!(read_line(&mut r), None);
    }
}
