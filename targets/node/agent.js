// Node.js target agent: executes socket calls on command, see targets/PROTOCOL.md.
//
// It uses Node's `net` and `dgram` modules the way a Node program would and
// reports what they returned. No test logic lives here. Node 20 built-ins only.
//
// Node is event-driven, and that shapes the agent:
// - A net.Server accepts every connection as soon as it arrives (libuv accepts
//   in a loop until the kernel's queue is empty) and emits 'connection'; the
//   agent keeps those sockets in a queue of its own, and `accept H MS` takes
//   the next one from it, waiting up to MS.
// - A socket reads data as soon as it arrives ('data' events); the agent keeps
//   it in a buffer per socket, with end of file and the error remembered, and
//   `recv H MAX MS` takes from that buffer (data first, then end of file, then
//   the error), waiting up to MS.
// - `socket` creates no OS socket yet: Node creates, binds and listens
//   (net.Server.listen) or connects (net.connect) in one call, so a TCP `bind`
//   is recorded and answered `deferred=1`. dgram also creates its socket at
//   bind or connect.
// - Node's defaults are kept (allowHalfOpen: false: the peer's FIN is answered
//   with the socket's own FIN at once). `--allow-half-open` makes every server
//   and client socket allowHalfOpen: true.
'use strict';

const net = require('net');
const dgram = require('dgram');

const MAX_LINE = 4096; // bytes in a command line, its newline not counted
const INT_MAX = 2 ** 31 - 1;

const USAGE = 'usage: node agent.js [--allow-half-open]';
const argv = process.argv.slice(2);
if (argv.some((a) => a !== '--allow-half-open')) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const HALF_OPEN = argv.includes('--allow-half-open');
// Node's defaults unless --allow-half-open: no option is passed at all.
const TCP_OPTIONS = HALF_OPEN ? { allowHalfOpen: true } : {};
const VERSION = `node ${process.version} (net${HALF_OPEN ? ' allowHalfOpen' : ''}, dgram; ` +
  'accept and recv buffered in the agent)';

// -- replies --------------------------------------------------------------------------------------
class Proto extends Error {
  constructor(code, msg) {
    super(msg);
    this.code = code;
  }
}

class Unsupported extends Error {}

function badarg(msg) {
  return new Proto('badarg', msg);
}

// pct percent-encodes every byte outside A-Z a-z 0-9 - . _ ~ : /
function pct(text) {
  let out = '';
  for (const b of Buffer.from(String(text), 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~:/]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

// The errno name Node exposes: a system error's `code` ('ECONNREFUSED'); Node's own errors
// (ERR_...) carry none.
function errName(e) {
  if (e && typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) {
    return e.code;
  }
  return 'noerrno';
}

function errMsg(e) {
  if (!e) return 'unknown error';
  return e.code && !String(e.message).includes(e.code) ? `${e.code}: ${e.message}` : String(e.message);
}

function reply(line) {
  process.stdout.write(`${line}\n`); // synchronous for pipes and files on Linux
}

// -- arguments ------------------------------------------------------------------------------------
// number parses a decimal integer the way Python's int(text, 10) does (optional sign, single
// underscores between digits) within [low, high].
function number(text, low = 0, high = INT_MAX) {
  if (!/^[+-]?[0-9]+(_[0-9]+)*$/.test(text)) throw badarg(`not a number: ${text}`);
  const v = BigInt(text.replace(/_/g, ''));
  if (v < BigInt(low) || v > BigInt(high)) throw badarg(`out of range: ${text}`);
  return Number(v);
}

// timeout parses MS: null for `none`.
function timeout(text) {
  return text === 'none' ? null : number(text, 1, INT_MAX);
}

function keyword(text, words) {
  if (!words.includes(text)) throw badarg(`unknown keyword ${text}`);
  return text;
}

function address(s, addr) {
  const ok = s.family === 'inet' ? net.isIPv4(addr) : net.isIPv6(addr) && !addr.includes('%');
  if (!ok) throw badarg(`bad address ${addr}`);
  return addr;
}

function unhex(text) {
  if (text === '-') return Buffer.alloc(0);
  if (!/^([0-9a-fA-F]{2})+$/.test(text)) throw badarg('bad hex');
  return Buffer.from(text, 'hex');
}

// -- sockets --------------------------------------------------------------------------------------
// Sock is one handle: a record until Node creates its socket (server, conn or udp).
class Sock {
  constructor(kind, family) {
    this.kind = kind; // 'tcp' | 'udp'
    this.family = family; // 'inet' | 'inet6'
    this.bind = null; // a recorded bind {addr, port} (TCP)
    this.reuseaddr = undefined; // dgram's reuseAddr, set before the socket exists (UDP)
    this.server = null; // net.Server
    this.conn = null; // net.Socket
    this.udp = null; // dgram.Socket
    this.queue = []; // server: connections Node accepted, not yet taken by `accept`
    this.chunks = []; // conn: data received, not yet taken by `recv`; udp: datagrams
    this.eof = false; // conn: the peer's FIN was read
    this.error = null; // the error Node reported (conn, udp, server)
    this.peer = null; // conn from a server: the peer's address when Node accepted it
    this.waiters = new Set();
  }

  exists() {
    return this.server !== null || this.conn !== null || this.udp !== null;
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  // wait until ready() holds (true) or ms passed since t0 (process.hrtime.bigint(); false). ms null:
  // no timeout of the agent's own.
  wait(ready, ms, t0) {
    if (ready()) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer = null;
      const end = t0 + BigInt(ms === null ? 0 : ms) * 1000000n;
      const done = (v) => {
        this.waiters.delete(check);
        if (timer) clearTimeout(timer);
        resolve(v);
      };
      const check = () => {
        if (ready()) done(true);
      };
      // Node's timers count whole milliseconds from the loop's cached time: they can fire a
      // fraction of a millisecond early, so the remainder is waited again.
      const arm = () => {
        const left = Number(end - process.hrtime.bigint()) / 1e6;
        if (left <= 0) done(ready());
        else timer = setTimeout(arm, Math.ceil(left));
      };
      this.waiters.add(check);
      if (ms !== null) arm();
    });
  }
}

const socks = new Map();
let nextHandle = 1;

function add(s) {
  const h = nextHandle++;
  socks.set(h, s);
  return h;
}

function handle(text) {
  const h = number(text, 0, INT_MAX);
  if (!socks.has(h)) throw new Proto('badhandle', `no handle ${text}`);
  return socks.get(h);
}

// watch keeps what a TCP connection receives: data, end of file, the error.
function watch(s, conn) {
  s.conn = conn;
  conn.on('data', (chunk) => {
    s.chunks.push(chunk);
    s.notify();
  });
  conn.on('end', () => {
    s.eof = true;
    s.notify();
  });
  conn.on('error', (e) => {
    s.error = e;
    s.notify();
  });
  conn.on('close', () => s.notify());
}

function wildcard(s) {
  return s.family === 'inet' ? '0.0.0.0' : '::';
}

function notYet(s) {
  const by = s.kind === 'udp' ? 'bind or connect (dgram)' : 'listen (net.Server) or connect (net.connect)';
  return new Unsupported(`the socket does not exist yet in Node (it is created by ${by})`);
}

function noServerCall(what) {
  return new Unsupported(`a net.Server has no ${what}: it only listens and hands over connections`);
}

// newUdp creates the dgram socket (no OS socket until it binds or connects), keeping what it receives.
function newUdp(s) {
  const options = { type: s.family === 'inet' ? 'udp4' : 'udp6' };
  if (s.reuseaddr !== undefined) options.reuseAddr = s.reuseaddr === 1;
  const u = dgram.createSocket(options);
  u.on('message', (data, rinfo) => {
    s.chunks.push({ data, addr: rinfo.address, port: rinfo.port });
    s.notify();
  });
  u.on('error', (e) => {
    s.error = e;
    s.notify();
  });
  s.udp = u;
  return u;
}

// once resolves with the first of the events named (and its argument), removing the others.
function once(emitter, events) {
  return new Promise((resolve) => {
    const fns = {};
    for (const ev of events) {
      fns[ev] = (arg) => {
        for (const e of events) emitter.removeListener(e, fns[e]);
        resolve({ event: ev, arg });
      };
      emitter.on(ev, fns[ev]);
    }
  });
}

function since(t0) {
  return Number((process.hrtime.bigint() - t0) / 1000n);
}

// -- operations -----------------------------------------------------------------------------------
// Each returns {fields, us} (ok), or {error, us} (err); Proto and Unsupported are thrown.
const OPT_VALUES = { reuseaddr: 1, linger: 2, syncnt: 1, user_timeout: 1, nonblock: 1 };
const known = (table, key) => Object.prototype.hasOwnProperty.call(table, key);

const ops = {
  socket: [2, false, async ([kind, family]) => {
    keyword(kind, ['tcp', 'udp']);
    keyword(family, ['inet', 'inet6']);
    return { fields: [['h', add(new Sock(kind, family))]], us: 0 };
  }],

  setsockopt: [2, true, async ([h, opt, ...values]) => {
    const s = handle(h);
    if (!known(OPT_VALUES, opt)) throw badarg(`unknown option ${opt}`);
    if (values.length !== OPT_VALUES[opt]) throw new Proto('badline', `${opt} takes ${OPT_VALUES[opt]} value(s)`);
    const nums = values.map((v) => number(v));
    switch (opt) {
      case 'reuseaddr':
        if (s.kind === 'udp' && !s.exists()) {
          s.reuseaddr = nums[0]; // dgram.createSocket({reuseAddr}) when bind or connect creates it
          return { fields: [], us: 0 };
        }
        if (s.kind === 'udp') throw new Unsupported('dgram sets reuseAddr only when it creates the socket');
        throw new Unsupported("Node's net has no SO_REUSEADDR option (libuv sets it on every TCP socket it binds)");
      case 'linger':
        throw new Unsupported("Node's net has no SO_LINGER (only socket.resetAndDestroy(), an abortive close)");
      case 'syncnt':
        throw new Unsupported("Node's net has no TCP_SYNCNT");
      case 'user_timeout':
        throw new Unsupported("Node's net has no TCP_USER_TIMEOUT (socket.setTimeout is an idle timer of Node's own)");
      default: // nonblock
        throw new Unsupported('Node has no blocking or non-blocking mode: every socket call is asynchronous (events)');
    }
  }],

  getsockopt: [2, false, async ([h, opt]) => {
    handle(h);
    if (!known(OPT_VALUES, opt)) throw badarg(`unknown option ${opt}`);
    if (opt === 'nonblock') {
      throw new Unsupported('Node has no blocking or non-blocking mode: every socket call is asynchronous (events)');
    }
    throw new Unsupported("Node's net and dgram have no getsockopt");
  }],

  bind: [3, false, async ([h, addr, port]) => {
    const s = handle(h);
    address(s, addr);
    const p = number(port, 0, 65535);
    if (s.kind === 'tcp') {
      if (s.exists()) throw new Unsupported('Node binds only when it creates the socket (listen or connect)');
      s.bind = { addr, port: p };
      return { fields: [['deferred', 1]], us: 0 };
    }
    const u = s.udp || newUdp(s);
    const t0 = process.hrtime.bigint();
    const done = once(u, ['listening', 'error']);
    try {
      u.bind({ address: addr, port: p });
    } catch (e) {
      return { error: e, us: since(t0) };
    }
    const r = await done;
    const us = since(t0);
    if (r.event === 'error') {
      s.error = null; // reported here, not remembered for recv
      return { error: r.arg, us };
    }
    return { fields: [], us };
  }],

  listen: [2, false, async ([h, backlogText]) => {
    const s = handle(h);
    const backlog = backlogText === 'default' ? null : number(backlogText);
    if (s.kind === 'udp') throw new Unsupported('dgram has no listen');
    if (s.exists()) throw new Unsupported('Node listens only on a socket it creates (net.Server.listen)');
    const server = net.createServer(TCP_OPTIONS);
    const options = { host: s.bind ? s.bind.addr : wildcard(s), port: s.bind ? s.bind.port : 0 };
    if (backlog !== null) options.backlog = backlog; // Node: 0 (falsy) means its default, 511
    const t0 = process.hrtime.bigint();
    const done = once(server, ['listening', 'error']);
    try {
      server.listen(options);
    } catch (e) {
      return { error: e, us: since(t0) };
    }
    const r = await done;
    const us = since(t0);
    if (r.event === 'error') return { error: r.arg, us };
    s.server = server;
    server.on('connection', (conn) => {
      const c = new Sock('tcp', s.family);
      c.peer = { addr: conn.remoteAddress, port: conn.remotePort };
      watch(c, conn);
      s.queue.push(c);
      s.notify();
    });
    server.on('error', (e) => { // an accept that failed (EMFILE...)
      s.error = e;
      s.notify();
    });
    return { fields: [], us };
  }],

  accept: [2, false, async ([h, msText]) => {
    const s = handle(h);
    const ms = timeout(msText);
    if (!s.server) {
      if (s.kind === 'tcp' && !s.exists()) {
        throw new Unsupported('Node accepts only on a net.Server: a socket only bound is no OS socket yet ' +
          '(listen creates it)');
      }
      throw new Unsupported('Node accepts only on a net.Server');
    }
    const t0 = process.hrtime.bigint();
    await s.wait(() => s.queue.length > 0 || s.error !== null, ms, t0);
    const us = since(t0);
    if (s.queue.length > 0) {
      const c = s.queue.shift();
      const fields = [['h', add(c)]];
      if (c.peer.addr !== undefined) fields.push(['addr', c.peer.addr], ['port', c.peer.port]);
      else fields.push(['msg', pct('Node had no remoteAddress for the connection (reset before it was accepted)')]);
      return { fields, us };
    }
    if (s.error !== null) {
      const e = s.error;
      s.error = null;
      return { error: e, us };
    }
    return { timeout: true, us };
  }],

  connect: [4, false, async ([h, addr, port, msText]) => {
    const s = handle(h);
    address(s, addr);
    const p = number(port, 0, 65535);
    const ms = timeout(msText);
    if (s.kind === 'udp') {
      const u = s.udp || newUdp(s);
      const t0 = process.hrtime.bigint();
      try {
        const err = await new Promise((resolve) => u.connect(p, addr, resolve));
        return err ? { error: err, us: since(t0) } : { fields: [], us: since(t0) };
      } catch (e) {
        return { error: e, us: since(t0) };
      }
    }
    if (s.exists()) throw new Unsupported('Node connects only a socket it creates (net.connect)');
    const options = { ...TCP_OPTIONS, host: addr, port: p };
    if (s.bind) {
      options.localAddress = s.bind.addr;
      options.localPort = s.bind.port;
    }
    const t0 = process.hrtime.bigint();
    let conn;
    try {
      conn = net.connect(options);
    } catch (e) {
      return { error: e, us: since(t0) };
    }
    let r = null;
    once(conn, ['connect', 'error']).then((first) => {
      r = first;
      s.notify();
    });
    watch(s, conn);
    await s.wait(() => r !== null, ms, t0);
    const us = since(t0);
    if (r === null) r = { event: 'timeout' };
    if (r.event === 'connect') return { fields: [], us };
    // Failed or timed out: this socket is gone; the handle can connect again with a new one.
    conn.destroy();
    s.conn = null;
    s.error = null;
    s.chunks = [];
    s.eof = false;
    return r.event === 'timeout' ? { timeout: true, us } : { error: r.arg, us };
  }],

  send: [2, false, async ([h, hex]) => {
    const s = handle(h);
    const data = unhex(hex);
    if (s.kind === 'udp') {
      const u = s.udp || newUdp(s);
      const t0 = process.hrtime.bigint();
      try {
        const err = await new Promise((resolve) => u.send(data, resolve));
        return err ? { error: err, us: since(t0) } : { fields: [['n', data.length]], us: since(t0) };
      } catch (e) {
        return { error: e, us: since(t0) };
      }
    }
    if (s.server) throw noServerCall('write');
    if (!s.conn) throw notYet(s);
    const t0 = process.hrtime.bigint();
    // One write; its callback says when Node handed the bytes to the kernel, or why it could not.
    const err = await new Promise((resolve) => s.conn.write(data, (e) => resolve(e)));
    const us = since(t0);
    return err ? { error: err, us } : { fields: [['n', data.length]], us };
  }],

  recv: [3, false, async ([h, maxText, msText]) => {
    const s = handle(h);
    const max = number(maxText, 1, 1 << 20);
    const ms = timeout(msText);
    if (s.kind === 'udp') {
      if (!s.udp) throw notYet(s);
      const t0 = process.hrtime.bigint();
      await s.wait(() => s.chunks.length > 0 || s.error !== null, ms, t0);
      const us = since(t0);
      if (s.chunks.length > 0) {
        const d = s.chunks.shift();
        const data = d.data.subarray(0, max); // the rest of a longer datagram is lost, as with recvfrom
        return { fields: [['n', data.length], ['data', data.toString('hex') || '-'], ['addr', d.addr],
          ['port', d.port]], us };
      }
      if (s.error !== null) { // reported once: dgram's socket stays usable after an error
        const e = s.error;
        s.error = null;
        return { error: e, us };
      }
      return { timeout: true, us };
    }
    if (s.server) throw noServerCall('read');
    if (!s.conn) throw notYet(s);
    const t0 = process.hrtime.bigint();
    await s.wait(() => s.chunks.length > 0 || s.eof || s.error !== null, ms, t0);
    const us = since(t0);
    if (s.chunks.length > 0) { // data first, then end of file, then the error (as the kernel orders them)
      const parts = [];
      let n = 0;
      while (s.chunks.length > 0 && n < max) {
        const c = s.chunks[0];
        const take = Math.min(c.length, max - n);
        parts.push(c.subarray(0, take));
        n += take;
        if (take === c.length) s.chunks.shift();
        else s.chunks[0] = c.subarray(take);
      }
      return { fields: [['n', n], ['data', Buffer.concat(parts).toString('hex')]], us };
    }
    if (s.eof) return { fields: [['n', 0], ['data', '-']], us };
    if (s.error !== null) return { error: s.error, us };
    return { timeout: true, us };
  }],

  shutdown: [2, false, async ([h, how]) => {
    const s = handle(h);
    keyword(how, ['rd', 'wr', 'rdwr']);
    if (s.kind === 'udp') throw new Unsupported('dgram has no shutdown');
    if (s.server) throw noServerCall('end');
    if (!s.conn) throw notYet(s);
    if (how !== 'wr') {
      throw new Unsupported("Node's net can end only the writing side (socket.end(): shutdown(SHUT_WR)), " +
        'not the reading side');
    }
    const t0 = process.hrtime.bigint();
    const err = await new Promise((resolve) => s.conn.end((e) => resolve(e)));
    const us = since(t0);
    return err ? { error: err, us } : { fields: [], us };
  }],

  close: [1, false, async ([h]) => {
    const s = handle(h);
    socks.delete(number(h));
    const t0 = process.hrtime.bigint();
    if (s.server) {
      // Stops listening at once; connections Node already accepted stay open (net.Server.close).
      s.server.close();
    } else if (s.conn) {
      s.conn.destroy();
    } else if (s.udp) {
      try {
        s.udp.close();
      } catch (e) {
        if (e.code !== 'ERR_SOCKET_DGRAM_NOT_RUNNING') return { error: e, us: since(t0) };
      }
    }
    return { fields: [], us: since(t0) };
  }],

  getsockname: [1, false, async ([h]) => {
    const s = handle(h);
    let a;
    const t0 = process.hrtime.bigint();
    try {
      if (s.server) a = s.server.address();
      else if (s.conn) a = s.conn.address();
      else if (s.udp) a = s.udp.address();
      else throw notYet(s);
    } catch (e) {
      if (e instanceof Unsupported) throw e;
      return { error: e, us: since(t0) };
    }
    const us = since(t0);
    if (!a || a.port === undefined) {
      return { error: new Error('address() returned nothing: Node has closed this socket'), us };
    }
    return { fields: [['addr', a.address], ['port', a.port]], us };
  }],

  getpeername: [1, false, async ([h]) => {
    const s = handle(h);
    const t0 = process.hrtime.bigint();
    let addr;
    let port;
    if (s.udp) {
      try {
        ({ address: addr, port } = s.udp.remoteAddress());
      } catch (e) {
        return { error: e, us: since(t0) };
      }
    } else if (s.server) {
      throw noServerCall('remoteAddress');
    } else if (s.conn) {
      addr = s.conn.remoteAddress;
      port = s.conn.remotePort;
    } else {
      throw notYet(s);
    }
    const us = since(t0);
    if (addr === undefined) {
      return { error: new Error('remoteAddress is undefined: not connected, or Node has closed this socket'), us };
    }
    return { fields: [['addr', addr], ['port', port]], us };
  }],

  quit: [0, false, async () => ({ fields: [], us: 0 })],
};

// isSpace matches Python's str.split() on ASCII.
function split(line) {
  return line.split(/[ \t\n\v\f\r\x1c-\x1f]+/).filter((w) => w !== '');
}

async function execute(line) {
  const words = split(line);
  if (words.length === 0) throw new Proto('badline', 'empty line');
  if (!known(ops, words[0])) throw new Proto('badop', `unknown command ${words[0]}`);
  const [nargs, variadic, fn] = ops[words[0]];
  const args = words.slice(1);
  if (args.length < nargs || (args.length > nargs && !variadic)) {
    throw new Proto('badline', `${words[0]} takes ${nargs} argument(s)`);
  }
  return fn(args);
}

async function answer(item) {
  if (item.tooLong) return 'proto badline msg=' + pct('line too long');
  if (item.bytes.some((b) => b >= 0x80)) return 'proto badline msg=' + pct('not ASCII');
  const line = item.bytes.toString('latin1');
  try {
    const r = await execute(line);
    if (r.timeout) return `err timeout ${r.us} msg=${pct("the call's own timeout (MS) expired")}`;
    if (r.error !== undefined) return `err ${errName(r.error)} ${r.us} msg=${pct(errMsg(r.error))}`;
    return `ok ${r.us}` + r.fields.map(([k, v]) => ` ${k}=${v}`).join('');
  } catch (e) {
    if (e instanceof Proto) return `proto ${e.code} msg=${pct(e.message)}`;
    if (e instanceof Unsupported) return `unsupported 0 msg=${pct(e.message)}`;
    return `err ${errName(e)} 0 msg=${pct(errMsg(e))}`; // a call that threw at once
  }
}

// -- stdin: lines of bytes, executed one at a time, in order ---------------------------------------
const lines = []; // {bytes: Buffer} or {tooLong: true}
let current = [];
let currentLen = 0;
let tooLong = false;
let stdinDone = false;
let wake = null;

function push(item) {
  lines.push(item);
  current = [];
  currentLen = 0;
  tooLong = false;
}

process.stdin.on('data', (chunk) => {
  let start = 0;
  while (start <= chunk.length) {
    const nl = chunk.indexOf(0x0a, start);
    const end = nl === -1 ? chunk.length : nl;
    if (!tooLong) {
      currentLen += end - start;
      if (currentLen > MAX_LINE) { // only the verdict is kept of a line too long
        tooLong = true;
        current = [];
      } else {
        current.push(chunk.subarray(start, end));
      }
    }
    if (nl === -1) break;
    push(tooLong ? { tooLong: true } : { bytes: Buffer.concat(current) });
    start = nl + 1;
  }
  if (wake) wake();
});

process.stdin.on('end', () => {
  if (currentLen > 0 || tooLong) push(tooLong ? { tooLong: true } : { bytes: Buffer.concat(current) });
  stdinDone = true;
  if (wake) wake();
});

async function nextLine() {
  while (lines.length === 0 && !stdinDone) {
    await new Promise((resolve) => {
      wake = resolve;
    });
    wake = null;
  }
  return lines.length > 0 ? lines.shift() : null;
}

async function main() {
  reply(`ready proto=1 lang=node version=${pct(VERSION)} pid=${process.pid}`);
  for (;;) {
    const item = await nextLine();
    if (item === null) process.exit(0); // EOF on stdin
    const out = await answer(item);
    reply(out);
    if (out.startsWith('ok') && split(item.bytes.toString('latin1'))[0] === 'quit') process.exit(0);
  }
}

main();
